//! The verdict: the one place where each phone's fate is decided. From the phones of one
//! round (Android and iPhone alike), the memory of earlier rounds, the phones being
//! rebooted after a task and the thresholds, [`decide`] gives every phone its own
//! reasons (quarantined, maintenance, or none: usable), the bot's reasons (theirs plus
//! the host's own), and the few actions that may fix a phone by itself. `get_state`,
//! `/metrics` and the `devices` subcommand all read this one result, through the
//! snapshot; the forced quarantine joins it in [`with_forced`]. Rules (texts exact,
//! thresholds from flags, N = 2):
//!
//! | condition | reason |
//! |---|---|
//! | battery below the minimum | maintenance `battery low: <serial> 12% (< 30%)` |
//! | ... then below the minimum plus `--battery-hysteresis` | maintenance `battery low: <serial> 32% (charging to 35%)` |
//! | any temperature above the maximum | maintenance `too hot: <serial> <sensor> 44.5°C (> 35°C)` |
//! | ... then any at or above the maximum minus `--temperature-hysteresis` | maintenance `too hot: <serial> <sensor> 34.0°C (cooling to below 33°C)` |
//! | online, `sys.boot_completed` not 1, not being rebooted | maintenance `booting: <serial>` |
//! | being rebooted | maintenance `rebooting <serial> after task` (or `for its care: ...`) |
//! | seen before, absent now, not being rebooted | quarantined `device <serial> (<type>) has gone missing` |
//! | `unauthorized` | quarantined, with the adb key remedy |
//! | `no permissions` | quarantined, with the USB remedy |
//! | `offline` (listed so, or the transport answered `device offline`) | one step of the recovery ladder per round that did not help (`link::ladder`): reconnect-offline (maintenance `device <serial> offline, reconnecting`), reconnect the phone, a USB reset (`--usb-reset`, once an hour at most), restart the adb server (every phone stuck), a hub port power cycle (`--usb-power-cycle`), each as maintenance `device <serial> offline, recovering: step 2, reconnect <serial>`; the USB steps and the restart only while idle |
//! | still offline when the steps are used up | quarantined `device <serial> is still offline after every recovery step: tried ...; check its USB cable and hub port, or replug it` |
//! | listed `device` but its round failed (a wedged adbd, a hung transport) | the same ladder without reconnect-offline (maintenance `device <serial> not answering (<why>), reconnecting`, then `..., recovering: step 2, ...`) |
//! | not answering when the steps are used up | quarantined `device <serial> still does not answer after every recovery step (last: <why>): tried ...; ...` |
//! | an iPhone not answering (no adb step can help) | maintenance `device <serial> not answering (<why>)`, quarantined after N rounds |
//! | `connecting` or `authorizing` for N consecutive rounds | maintenance `device <serial> has been <state> for N rounds` |
//! | bootloader, recovery, sideload, rescue, host, detached, or a state we do not know | quarantined `device <serial> is in adb state <state>, not Android: ...` |
//! | the iPhones cannot be listed | each known iPhone, and the bot: the listing's reason |
//! | battery health overheat, dead, over voltage or failure | maintenance `battery dead: <serial> (cable, port or battery)` |
//! | on power, below 95 %, the level not risen for `--charge-stall-after`, or fallen 5 points | maintenance `not charging: <serial> (cable, port or battery)` |
//! | `/data` has less free than `--min-data-free` | maintenance `data partition nearly full: <serial> 512 MiB free (< 1024 MiB)` |
//! | the node's annotation `test-machine-monitor/maintenance.<serial>` (serial as in a bot id) | maintenance `maintenance: <serial>: <note>` (the phone alone) |
//! | the node's annotation `test-machine-monitor/maintenance` | maintenance `maintenance: <note>` for the bot, and for every phone's bot (`--bots per-device`) |
//! | too hot for `--cooldown-reboot-after`, while idle | [`Action::Reboot`] once |
//! | still too hot `--cooldown-reboot-after` after that reboot | quarantined `too hot: <serial> for 60 min, 30 min after a reboot: ...` |
//! | up for longer than `--max-device-uptime`, while idle | [`Action::Reboot`] (at most once an hour) |
//!
//! A phone listed a moment ago and not interrogated yet, or in a handshake
//! (`connecting`, `authorizing`) for less than N rounds, gets no reason: the round that
//! reads it starts at once, and a reason set and cleared for every new phone would only
//! be noise. Every other phone that cannot take tasks has a reason. Every reason is
//! recomputed each round, so it clears as soon as its condition does; a phone that has
//! gone missing stays reported until it comes back (the memory lives as long as the
//! process). A phone being rebooted is expected to vanish or show `offline` for a while,
//! so neither counts against it.
//!
//! The rules are a table (`RULES`), one function each in `link` (the link and the
//! ladder) and `rules` (the phone's own condition); every text is in `reasons`; `view`
//! joins the results into what one bot reports. Each rule has its own tests, through
//! `One` (a phone through some rules alone); `decide`'s own tests go through `Round`.
//!
//! Must not: do I/O, log, or read the clock; the rules are tested as plain data.

use std::collections::{BTreeMap, BTreeSet};

mod link;
mod reasons;
mod rules;
#[cfg(test)]
mod testing;
mod view;

#[cfg(test)]
pub use testing::Round;
pub use view::{phone_view, while_draining, with_forced};

use crate::state::notes::Notes;
use crate::state::snapshot::{Device, DeviceKind, Fault, Link, ListingFailure, Reasons, State};
use reasons::{
    adb_server_silent, gone_missing, iphones_unlisted, phone_note_reason, pi_note_reason,
    rebooting_reason,
};
use rules::Charge;

/// Consecutive failed rounds (offline, not answering) after which reconnecting is given
/// up and a person is needed; also how long a handshake may last before it is reported.
pub const FAILED_ROUNDS_TO_QUARANTINE: u32 = 2;

/// The limits from `--min-battery`, `--max-temperature` and their hysteresis flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A battery strictly below this percentage puts the phone in maintenance.
    pub min_battery_percent: f64,
    /// A temperature strictly above this (°C) puts the phone in maintenance.
    pub max_temperature_celsius: f64,
    /// A hot phone leaves maintenance only once every sensor is strictly below
    /// `max_temperature_celsius` minus this.
    pub temperature_hysteresis: f64,
    /// A low battery leaves maintenance only at `min_battery_percent` plus this or more.
    pub battery_hysteresis: f64,
    /// A phone on power whose level has not risen for this long (below 95 %) is not
    /// charging.
    pub charge_stall_secs: f64,
    /// Less free space than this on `/data` puts the phone in maintenance.
    pub min_data_free_bytes: u64,
    /// A phone still too hot this long after it became so is rebooted once while idle,
    /// and quarantined if it is still hot as long again after that.
    pub cooldown_reboot_after_secs: f64,
    /// A phone up for longer than this is rebooted while idle.
    pub max_device_uptime_secs: f64,
    /// `--usb-reset`: a USB reset is a step of the ladder.
    pub usb_reset: bool,
    /// `--usb-power-cycle`: a hub port power cycle is the ladder's last step.
    pub usb_power_cycle: bool,
}

/// What one round remembers for the next.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Memory {
    /// Every phone seen since the program started, with what it last said it was; the
    /// source of "gone missing".
    seen: BTreeMap<String, Seen>,
    /// Consecutive rounds each serial has failed (offline or not answering); absent
    /// when it has not.
    failed_rounds: BTreeMap<String, u32>,
    /// Phones in maintenance for heat, until every sensor is below the exit threshold.
    hot: BTreeSet<String>,
    /// Phones in maintenance for a low battery, until it is at the exit threshold.
    low_battery: BTreeSet<String>,
    /// Phones on external power: the best level seen since plugged, and since when.
    charge: BTreeMap<String, Charge>,
    /// Each phone's verdict word and since when it has had it.
    verdict_since: BTreeMap<String, (&'static str, f64)>,
    /// Since when each hot phone has been in maintenance for heat.
    hot_since: BTreeMap<String, f64>,
    /// When a reboot for the phone's own care was last asked for.
    care_reboot_at: BTreeMap<String, f64>,
    /// The recovery step each failing phone is at (its consecutive failed rounds).
    recovery_step: BTreeMap<String, u32>,
    /// Consecutive rounds each phone has been in a handshake (connecting, authorizing).
    handshake_rounds: BTreeMap<String, u32>,
    /// When each phone was last reset over USB.
    usb_reset_at: BTreeMap<String, f64>,
    /// Whether each climbing phone's ladder has the USB reset: decided when the climb
    /// starts, so a reset during the climb does not shorten it.
    climb_usb_reset: BTreeMap<String, bool>,
}

/// The flags' defaults, for the tests of every module that runs the verdict.
#[cfg(test)]
pub const TEST_THRESHOLDS: Thresholds = Thresholds {
    min_battery_percent: 30.0,
    max_temperature_celsius: 35.0,
    temperature_hysteresis: 2.0,
    battery_hysteresis: 5.0,
    charge_stall_secs: 1200.0,
    min_data_free_bytes: 1 << 30,
    cooldown_reboot_after_secs: 1800.0,
    max_device_uptime_secs: 90_000.0,
    usb_reset: false,
    usb_power_cycle: false,
};

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    kind: DeviceKind,
    device_type: Option<String>,
}

/// Something the watcher should do for the phones to recover by themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `host:reconnect-offline`: once per round at most, it resets every offline
    /// transport of the server.
    ReconnectOffline,
    /// `host-serial:<serial>:reconnect`: kicks the transport of a phone that is listed
    /// online but does not answer.
    Reconnect(String),
    /// `host:kill`: the adb server is restarted by its supervisor, and every transport
    /// with it.
    RestartAdbServer,
    /// `USBDEVFS_RESET` of the phone at `devpath` (`--usb-reset`).
    UsbReset { serial: String, devpath: String },
    /// Power-cycles the hub port of the phone at `devpath` (`--usb-power-cycle`).
    PowerCycle { serial: String, devpath: String },
    /// Reboots a phone for its own care (too hot for too long, up for too long); only
    /// asked while no task runs.
    Reboot { serial: String, why: String },
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every phone given, each with its own reasons, plus the phones seen before and
    /// absent now (state [`State::Missing`], with their last known kind and type),
    /// sorted by kind, then serial.
    pub devices: Vec<Device>,
    /// The bot's reasons: every phone's and the host's, sorted and distinct.
    pub reasons: Reasons,
    /// The reasons that belong to no single phone: the host's given, and the Pi's
    /// maintenance note; every phone's bot reports them (`--bots per-device`).
    pub host_reasons: Reasons,
    /// To pass to the next round's [`decide`].
    pub memory: Memory,
    pub actions: Vec<Action>,
}

/// Sorted, distinct reasons while they are being collected.
#[derive(Default)]
struct Collect {
    quarantined: BTreeSet<String>,
    maintenance: BTreeSet<String>,
}

impl Collect {
    /// The iPhones could not be listed: a person is needed unless it only timed out.
    fn listing_failed(&mut self, failure: &ListingFailure) {
        let list = if failure.needs_person {
            &mut self.quarantined
        } else {
            &mut self.maintenance
        };
        list.insert(iphones_unlisted(failure));
    }

    fn into_reasons(self) -> Reasons {
        Reasons {
            quarantined: self.quarantined.into_iter().collect(),
            maintenance: self.maintenance.into_iter().collect(),
        }
    }
}

/// What the host says of itself this round, facts that belong to no single phone; each
/// holds back the bot (and every phone's bot, `--bots per-device`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    /// The adb server accepts connections and answers none: its first failure, stable
    /// while the silence lasts. `None` while it answers.
    pub adb_server_silent: Option<String>,
    /// Why the iPhones could not be listed, when the latest listing failed.
    pub iphones_unlisted: Option<ListingFailure>,
}

/// Applies the rules to this round's `devices` (the phones listed now, and the phones
/// being rebooted; a device in [`State::Missing`] is treated as absent). `rebooting`
/// holds the serials the watcher rebooted after a task and has not yet seen come back;
/// `outside` what the phones do not say themselves; `now` is the watcher's clock in
/// seconds (only differences matter); `idle` is false while a task runs, when no phone
/// is rebooted for its own care.
pub fn decide(
    memory: &Memory,
    devices: &[Device],
    rebooting: &BTreeSet<String>,
    outside: Outside,
    t: &Thresholds,
    now: f64,
    idle: bool,
) -> Outcome {
    let Outside { host, notes } = outside;
    let mut actions = Vec::new();
    let mut next = Memory {
        seen: memory.seen.clone(),
        ..Memory::default()
    };
    let all_stuck = all_stuck(devices, rebooting);
    let mut out: Vec<Device> = Vec::new();
    for d in devices.iter().filter(|d| d.state != State::Missing) {
        next.remember(d);
        let mut turn = Turn {
            d,
            was: memory,
            next: &mut next,
            r: Collect::default(),
            actions: &mut actions,
            t,
            notes,
            now,
            idle,
            all_stuck,
            being_rebooted: rebooting.contains(&d.serial) || d.state == State::Rebooting,
        };
        for rule in RULES {
            rule(&mut turn);
        }
        let mut d = d.clone();
        d.reasons = turn.r.into_reasons();
        out.push(d);
    }
    let present: BTreeSet<String> = out.iter().map(|d| d.serial.clone()).collect();
    // A phone that a reconnect dropped from the list (a USB phone re-enumerates, a TCP
    // one is dropped) keeps its place on the ladder while it is away.
    for (serial, step) in &memory.failed_rounds {
        if !present.contains(serial) {
            next.failed_rounds.insert(serial.clone(), *step);
        }
    }
    out.extend(missing(&next, &present, rebooting, notes));
    out.sort_by(|a, b| (a.kind, &a.serial).cmp(&(b.kind, &b.serial)));
    // One device per serial: a listing that names a serial twice is shown once.
    out.dedup_by(|a, b| a.kind == b.kind && a.serial == b.serial);
    for d in &mut out {
        d.recovery_step = next.recovery_step.get(&d.serial).copied().unwrap_or(0);
        let word = d.verdict_word();
        let since = match memory.verdict_since.get(&d.serial) {
            Some((was, since)) if *was == word => *since,
            _ => now,
        };
        d.verdict_for_secs = now - since;
        next.verdict_since.insert(d.serial.clone(), (word, since));
    }
    let host = host_reasons(host, notes);
    Outcome {
        reasons: bot_reasons(&out, rebooting, &host),
        devices: out,
        host_reasons: host,
        memory: next,
        actions,
    }
}

/// A rule: reads one phone (and the memory), adds to its reasons, its memory and the
/// actions.
type Rule = fn(&mut Turn);

/// The rules each present phone goes through, in this order: `care` reads what `heat`
/// decided.
const RULES: [Rule; 9] = [
    link::rebooting,
    link::link,
    rules::battery,
    rules::heat,
    rules::care,
    rules::battery_health,
    rules::charge,
    rules::data_free,
    rules::note,
];

/// One phone's turn through [`RULES`]: what each rule reads, and what it adds to.
struct Turn<'a> {
    d: &'a Device,
    /// The memory of the earlier rounds.
    was: &'a Memory,
    /// The memory this round leaves.
    next: &'a mut Memory,
    /// The phone's reasons.
    r: Collect,
    actions: &'a mut Vec<Action>,
    t: &'a Thresholds,
    notes: &'a Notes,
    now: f64,
    idle: bool,
    /// Every Android phone present is offline or not answering.
    all_stuck: bool,
    /// Rebooted by the watcher and not back yet: away by design.
    being_rebooted: bool,
}

impl Turn<'_> {
    /// Counts one more failed round (offline, not answering); returns how many in a row.
    fn failed(&mut self) -> u32 {
        let serial = &self.d.serial;
        let rounds = self.was.failed_rounds.get(serial).copied().unwrap_or(0) + 1;
        self.next.failed_rounds.insert(serial.clone(), rounds);
        rounds
    }
}

impl Memory {
    /// Notes that the phone was seen, and what it said it was.
    fn remember(&mut self, d: &Device) {
        let seen = self.seen.entry(d.serial.clone()).or_insert(Seen {
            kind: d.kind,
            device_type: None,
        });
        seen.kind = d.kind;
        if d.device_type.is_some() {
            seen.device_type.clone_from(&d.device_type);
        }
    }
}

/// Whether every Android phone present is offline or not answering: the adb server
/// itself may be what is stuck.
fn all_stuck(devices: &[Device], rebooting: &BTreeSet<String>) -> bool {
    let mut android = devices
        .iter()
        .filter(|d| {
            d.kind == DeviceKind::Android
                && d.state != State::Missing
                && !rebooting.contains(&d.serial)
                && d.state != State::Rebooting
        })
        .peekable();
    android.peek().is_some()
        && android.all(|d| {
            d.link() == Some(&Link::Offline) || matches!(d.fault, Some(Fault::NotAnswering { .. }))
        })
}

/// The phones seen before and absent now (not being rebooted): gone missing, each as
/// it was last known, with its operator's note if it has one.
fn missing(
    next: &Memory,
    present: &BTreeSet<String>,
    rebooting: &BTreeSet<String>,
    notes: &Notes,
) -> Vec<Device> {
    next.seen
        .iter()
        .filter(|(serial, _)| !present.contains(*serial) && !rebooting.contains(*serial))
        .map(|(serial, seen)| {
            let mut device = Device::listed(seen.kind, serial, Link::Offline);
            device.state = State::Missing;
            device.fault = None;
            device.device_type.clone_from(&seen.device_type);
            device.reasons.quarantined = vec![gone_missing(serial, seen.device_type.as_deref())];
            if let Some(note) = notes.phone(serial) {
                device.reasons.maintenance = vec![phone_note_reason(serial, note)];
            }
            device
        })
        .collect()
}

/// The reasons that belong to no single phone: the host's facts and the Pi's note,
/// which holds back every bot of the Pi (each phone's bot reports these too).
fn host_reasons(host: &Host, notes: &Notes) -> Reasons {
    let mut own = Collect::default();
    if let Some(failure) = &host.iphones_unlisted {
        own.listing_failed(failure);
    }
    if let Some(first) = &host.adb_server_silent {
        own.maintenance.insert(adb_server_silent(first));
    }
    if let Some(note) = &notes.pi {
        own.maintenance.insert(pi_note_reason(note));
    }
    own.into_reasons()
}

/// The bot's reasons: every phone's and the host's. A phone being rebooted that the
/// caller did not pass still holds the bot back.
fn bot_reasons(devices: &[Device], rebooting: &BTreeSet<String>, host: &Reasons) -> Reasons {
    let mut bot = Collect::default();
    for r in devices.iter().map(|d| &d.reasons).chain([host]) {
        bot.quarantined.extend(r.quarantined.iter().cloned());
        bot.maintenance.extend(r.maintenance.iter().cloned());
    }
    for serial in rebooting
        .iter()
        .filter(|s| !devices.iter().any(|d| &d.serial == *s))
    {
        bot.maintenance
            .insert(rebooting_reason(serial, "after task"));
    }
    bot.into_reasons()
}

/// What [`decide`] is given besides the phones.
#[derive(Debug, Clone, Copy)]
pub struct Outside<'a> {
    /// What the host says of itself: facts that belong to no single phone.
    pub host: &'a Host,
    /// The operators' maintenance notes (the node's annotations).
    pub notes: &'a Notes,
}

#[cfg(test)]
mod tests {
    use super::reasons::unauthorized_reason;
    use super::*;
    use crate::state::snapshot::Temperature;

    const T: Thresholds = TEST_THRESHOLDS;

    fn healthy(serial: &str) -> Device {
        let mut d = Device::listed(DeviceKind::Android, serial, Link::Device);
        d.fault = None;
        d.device_type = Some("husky".into());
        d.battery_percent = Some(80.0);
        d.temperatures = vec![Temperature {
            sensor: "battery".into(),
            celsius: 28.0,
        }];
        d
    }

    fn in_state(serial: &str, state: &str) -> Device {
        let mut d = Device::listed(DeviceKind::Android, serial, Link::from_adb(state));
        d.fault = Some(Fault::LinkNotReady);
        d
    }

    fn not_answering(serial: &str, offline: bool) -> Device {
        let mut d = healthy(serial);
        d.fault = Some(Fault::NotAnswering {
            why: "timed out".into(),
            offline,
        });
        d
    }

    /// The rules with no host reasons, as most tests want them.
    fn assess(
        memory: &Memory,
        devices: &[Device],
        rebooting: &BTreeSet<String>,
        t: &Thresholds,
    ) -> Outcome {
        Round::of(devices)
            .after(memory)
            .rebooting(rebooting)
            .thresholds(*t)
            .decide()
    }

    fn missing(a: &Outcome) -> Vec<&Device> {
        a.devices
            .iter()
            .filter(|d| d.state == State::Missing)
            .collect()
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn set(serials: &[&str]) -> BTreeSet<String> {
        serials.iter().map(|s| s.to_string()).collect()
    }

    /// Runs rounds in sequence, each from the previous memory, and returns the last.
    fn rounds(rounds: &[(Vec<Device>, BTreeSet<String>)]) -> Outcome {
        let mut memory = Memory::default();
        let mut last = None;
        for (devices, rebooting) in rounds {
            let a = assess(&memory, devices, rebooting, &T);
            memory = a.memory.clone();
            last = Some(a);
        }
        last.unwrap()
    }

    fn quarantined(a: &Outcome) -> Vec<&str> {
        a.reasons.quarantined.iter().map(String::as_str).collect()
    }

    fn maintenance(a: &Outcome) -> Vec<&str> {
        a.reasons.maintenance.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_phone_whose_shell_answers_unreadably_is_quarantined_without_a_ladder() {
        let mut d = healthy("U1");
        d.fault = Some(Fault::Unreadable(
            "/system/bin/sh: getprop: not found".into(),
        ));
        let rounds_of = |n| vec![(vec![d.clone()], none()); n];
        for n in [1, 2, 5] {
            let a = rounds(&rounds_of(n));
            assert_eq!(
                quarantined(&a),
                ["device U1 answers, but its properties cannot be read: \
                  /system/bin/sh: getprop: not found"]
            );
            assert!(maintenance(&a).is_empty(), "{:?}", a.reasons);
            // No reconnect, no server restart: its link works.
            assert!(a.actions.is_empty(), "{:?}", a.actions);
        }
        // Beside a phone that does not answer, it does not make the server look stuck,
        // as a second phone not answering would.
        let climb = |other: Device| {
            let mut memory = Memory::default();
            let mut restarts = 0;
            for _ in 0..6 {
                let a = assess(
                    &memory,
                    &[other.clone(), not_answering("W", false)],
                    &none(),
                    &T,
                );
                restarts += a
                    .actions
                    .iter()
                    .filter(|x| **x == Action::RestartAdbServer)
                    .count();
                memory = a.memory;
            }
            restarts
        };
        assert_eq!(climb(d.clone()), 0);
        assert!(climb(not_answering("V", false)) > 0);
    }

    #[test]
    fn healthy_phones_give_no_reasons() {
        let a = assess(
            &Memory::default(),
            &[healthy("A"), healthy("B")],
            &none(),
            &T,
        );
        assert_eq!(a.reasons, Reasons::default());
        assert!(a.actions.is_empty());
        assert!(missing(&a).is_empty());
    }

    #[test]
    fn battery_low_sets_and_clears() {
        let mut low = healthy("S1");
        low.battery_percent = Some(12.0);
        let a = rounds(&[(vec![low], none())]);
        assert_eq!(maintenance(&a), vec!["battery low: S1 12% (< 30%)"]);
        let a = rounds(&[(vec![healthy("S1")], none()), (vec![healthy("S1")], none())]);
        assert!(a.reasons.maintenance.is_empty());
    }

    #[test]
    fn battery_at_the_threshold_is_fine_and_fractions_are_short() {
        let mut at = healthy("S1");
        at.battery_percent = Some(30.0);
        assert!(assess(&Memory::default(), &[at], &none(), &T)
            .reasons
            .maintenance
            .is_empty());
        let mut third = healthy("S1");
        third.battery_percent = Some(100.0 / 3.0);
        let t = Thresholds {
            min_battery_percent: 40.5,
            ..T
        };
        let a = assess(&Memory::default(), &[third], &none(), &t);
        assert_eq!(maintenance(&a), vec!["battery low: S1 33.3% (< 40.5%)"]);
    }

    #[test]
    fn too_hot_names_every_hot_sensor_and_clears() {
        let mut hot = healthy("S1");
        hot.temperatures = vec![
            Temperature {
                sensor: "battery".into(),
                celsius: 44.5,
            },
            Temperature {
                sensor: "cpu0".into(),
                celsius: 35.0,
            },
            Temperature {
                sensor: "skin".into(),
                celsius: 36.04,
            },
        ];
        let a = assess(&Memory::default(), &[hot.clone()], &none(), &T);
        assert_eq!(
            maintenance(&a),
            vec![
                "too hot: S1 battery 44.5°C (> 35°C)",
                "too hot: S1 skin 36.0°C (> 35°C)",
            ]
        );
        let a = rounds(&[(vec![hot], none()), (vec![healthy("S1")], none())]);
        assert!(a.reasons.maintenance.is_empty());
    }

    fn with_battery(serial: &str, percent: f64) -> Device {
        let mut d = healthy(serial);
        d.battery_percent = Some(percent);
        d
    }

    fn with_temp(serial: &str, celsius: f64) -> Device {
        let mut d = healthy(serial);
        d.temperatures[0].celsius = celsius;
        d
    }

    #[test]
    fn a_low_battery_leaves_maintenance_only_past_the_hysteresis() {
        // Enter below 30, stay in the band [30, 35), leave at 35.
        let a = rounds(&[(vec![with_battery("S1", 29.0)], none())]);
        assert_eq!(maintenance(&a), vec!["battery low: S1 29% (< 30%)"]);
        let band = assess(&a.memory, &[with_battery("S1", 33.0)], &none(), &T);
        assert_eq!(
            maintenance(&band),
            vec!["battery low: S1 33% (charging to 35%)"]
        );
        let still = assess(&band.memory, &[with_battery("S1", 34.9)], &none(), &T);
        assert_eq!(still.reasons.maintenance.len(), 1);
        let out = assess(&still.memory, &[with_battery("S1", 35.0)], &none(), &T);
        assert!(out.reasons.maintenance.is_empty(), "{:?}", out.reasons);
        // A phone that enters the band from above stays usable.
        let fine = assess(&out.memory, &[with_battery("S1", 31.0)], &none(), &T);
        assert!(fine.reasons.maintenance.is_empty());
    }

    #[test]
    fn a_hot_phone_leaves_maintenance_only_once_cooler_than_the_hysteresis() {
        let a = rounds(&[(vec![with_temp("S1", 36.0)], none())]);
        assert_eq!(maintenance(&a), vec!["too hot: S1 battery 36.0°C (> 35°C)"]);
        // At 35 °C exactly it is no longer above the maximum, but not yet below 33.
        let band = assess(&a.memory, &[with_temp("S1", 35.0)], &none(), &T);
        assert_eq!(
            maintenance(&band),
            vec!["too hot: S1 battery 35.0°C (cooling to below 33°C)"]
        );
        let still = assess(&band.memory, &[with_temp("S1", 33.0)], &none(), &T);
        assert_eq!(still.reasons.maintenance.len(), 1);
        let out = assess(&still.memory, &[with_temp("S1", 32.9)], &none(), &T);
        assert!(out.reasons.maintenance.is_empty(), "{:?}", out.reasons);
        let fine = assess(&out.memory, &[with_temp("S1", 34.0)], &none(), &T);
        assert!(
            fine.reasons.maintenance.is_empty(),
            "from below it is not hot"
        );
    }

    #[test]
    fn a_round_without_a_reading_keeps_the_phone_as_it_was() {
        let a = rounds(&[(vec![with_temp("S1", 40.0)], none())]);
        let mut blind = with_battery("S1", 80.0);
        blind.temperatures.clear();
        let b = assess(&a.memory, &[blind], &none(), &T);
        // No temperature was read: it stays in maintenance, saying so, and the next
        // round reads 34 °C: in the band, so it stays.
        assert_eq!(
            maintenance(&b),
            vec!["too hot: S1 (not read this round; cooling to below 33°C)"]
        );
        let c = assess(&b.memory, &[with_temp("S1", 34.0)], &none(), &T);
        assert_eq!(
            maintenance(&c),
            vec!["too hot: S1 battery 34.0°C (cooling to below 33°C)"]
        );
    }

    fn on_power(serial: &str, level: f64) -> Device {
        let mut d = with_battery(serial, level);
        d.powered = Some(true);
        d
    }

    /// Runs (devices, now) rounds in order and returns the last outcome.
    fn timed(rounds: &[(Device, f64)]) -> Outcome {
        let mut memory = Memory::default();
        let mut last = None;
        for (d, now) in rounds {
            let a = Round::of(std::slice::from_ref(d))
                .after(&memory)
                .at(*now)
                .decide();
            memory = a.memory.clone();
            last = Some(a);
        }
        last.unwrap()
    }

    const NOT_CHARGING: &str = "not charging: S1 (cable, port or battery)";

    #[test]
    fn a_phone_on_power_whose_level_does_not_rise_is_not_charging() {
        let stalled = timed(&[(on_power("S1", 60.0), 0.0), (on_power("S1", 60.0), 1199.0)]);
        assert!(stalled.reasons.maintenance.is_empty());
        let stalled = timed(&[(on_power("S1", 60.0), 0.0), (on_power("S1", 60.0), 1200.0)]);
        assert_eq!(maintenance(&stalled), vec![NOT_CHARGING]);
        // Rising resets the clock; unplugged, nothing is expected of it.
        let rising = timed(&[
            (on_power("S1", 60.0), 0.0),
            (on_power("S1", 61.0), 1000.0),
            (on_power("S1", 61.0), 2100.0),
        ]);
        assert!(rising.reasons.maintenance.is_empty());
        let unplugged = timed(&[
            (on_power("S1", 60.0), 0.0),
            (with_battery("S1", 60.0), 1300.0),
        ]);
        assert!(unplugged.reasons.maintenance.is_empty());
        // Full enough: no rise is expected.
        let full = timed(&[(on_power("S1", 96.0), 0.0), (on_power("S1", 96.0), 5000.0)]);
        assert!(full.reasons.maintenance.is_empty());
    }

    #[test]
    fn a_phone_that_loses_five_points_on_power_is_not_charging() {
        let falling = timed(&[(on_power("S1", 70.0), 0.0), (on_power("S1", 66.0), 60.0)]);
        assert!(falling.reasons.maintenance.is_empty());
        let falling = timed(&[
            (on_power("S1", 70.0), 0.0),
            (on_power("S1", 66.0), 60.0),
            (on_power("S1", 65.0), 120.0),
        ]);
        assert_eq!(maintenance(&falling), vec![NOT_CHARGING]);
    }

    #[test]
    fn a_bad_battery_health_needs_maintenance() {
        for (code, name) in [
            (3, "overheat"),
            (4, "dead"),
            (5, "over voltage"),
            (6, "failure"),
        ] {
            let mut d = healthy("S1");
            d.battery_health = Some(code);
            let a = assess(&Memory::default(), &[d], &none(), &T);
            assert_eq!(
                maintenance(&a),
                vec![format!("battery {name}: S1 (cable, port or battery)")]
            );
        }
        let mut good = healthy("S1");
        good.battery_health = Some(2);
        assert!(assess(&Memory::default(), &[good], &none(), &T)
            .reasons
            .maintenance
            .is_empty());
    }

    #[test]
    fn a_nearly_full_data_partition_needs_maintenance() {
        let mut d = healthy("S1");
        d.data_free_bytes = Some(512 << 20);
        let a = assess(&Memory::default(), &[d.clone()], &none(), &T);
        assert_eq!(
            maintenance(&a),
            vec!["data partition nearly full: S1 512 MiB free (< 1024 MiB)"]
        );
        d.data_free_bytes = Some(1 << 30);
        assert!(assess(&Memory::default(), &[d], &none(), &T)
            .reasons
            .maintenance
            .is_empty());
    }

    #[test]
    fn each_phone_says_how_long_it_has_had_its_verdict() {
        let mut hot = healthy("S1");
        hot.temperatures[0].celsius = 40.0;
        let a = timed(&[
            (healthy("S1"), 0.0),
            (hot.clone(), 100.0),
            (hot.clone(), 160.0),
        ]);
        assert_eq!(a.devices[0].verdict_word(), "maintenance");
        assert_eq!(a.devices[0].verdict_for_secs, 60.0);
        let b = timed(&[(healthy("S1"), 0.0), (healthy("S1"), 30.0)]);
        assert_eq!(b.devices[0].verdict_for_secs, 30.0);
    }

    /// Rounds of (device, now, idle), in order; the last outcome and every action asked.
    fn care(rounds: &[(Device, f64, bool)]) -> (Outcome, Vec<Action>) {
        let mut memory = Memory::default();
        let mut actions = Vec::new();
        let mut last = None;
        for (d, now, idle) in rounds {
            let a = Round::of(std::slice::from_ref(d))
                .after(&memory)
                .at(*now)
                .idle(*idle)
                .decide();
            memory = a.memory.clone();
            actions.extend(a.actions.clone());
            last = Some(a);
        }
        (last.unwrap(), actions)
    }

    fn reboot_of(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|a| match a {
                Action::Reboot { serial, why } => Some(format!("{serial}: {why}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_phone_that_does_not_cool_down_is_rebooted_once_then_quarantined() {
        let hot = with_temp("S1", 40.0);
        let (a, asked) = care(&[(hot.clone(), 0.0, true), (hot.clone(), 1799.0, true)]);
        assert!(reboot_of(&asked).is_empty());
        assert!(a.reasons.quarantined.is_empty());
        let (_, asked) = care(&[
            (hot.clone(), 0.0, true),
            (hot.clone(), 1800.0, true),
            (hot.clone(), 1830.0, true),
        ]);
        assert_eq!(
            reboot_of(&asked),
            vec!["S1: for its care: too hot for 30 min"],
            "once"
        );
        let (a, _) = care(&[
            (hot.clone(), 0.0, true),
            (hot.clone(), 1800.0, true),
            (hot.clone(), 3600.0, true),
        ]);
        assert_eq!(
            quarantined(&a),
            vec!["too hot: S1 for 60 min, 30 min after a reboot: check its airflow, case and charger"]
        );
        // Cooled down: everything is forgotten.
        let (a, _) = care(&[
            (hot.clone(), 0.0, true),
            (hot.clone(), 1800.0, true),
            (with_temp("S1", 30.0), 2000.0, true),
        ]);
        assert_eq!(a.reasons, Reasons::default());
    }

    #[test]
    fn no_care_reboot_while_a_task_runs() {
        let hot = with_temp("S1", 40.0);
        let (_, asked) = care(&[(hot.clone(), 0.0, true), (hot.clone(), 2000.0, false)]);
        assert!(reboot_of(&asked).is_empty());
        let (_, asked) = care(&[
            (hot.clone(), 0.0, true),
            (hot.clone(), 2000.0, false),
            (hot.clone(), 2030.0, true),
        ]);
        assert_eq!(
            reboot_of(&asked),
            vec!["S1: for its care: too hot for 34 min"]
        );
    }

    #[test]
    fn a_phone_up_too_long_is_rebooted_while_idle_at_most_once_an_hour() {
        let mut up = healthy("S1");
        up.uptime_secs = Some(90_001.0);
        let (_, asked) = care(&[(up.clone(), 0.0, false)]);
        assert!(reboot_of(&asked).is_empty(), "busy");
        let (_, asked) = care(&[(up.clone(), 0.0, true), (up.clone(), 60.0, true)]);
        assert_eq!(reboot_of(&asked), vec!["S1: for its care: up for 25.0 h"]);
        let (_, asked) = care(&[(up.clone(), 0.0, true), (up.clone(), 3600.0, true)]);
        assert_eq!(
            reboot_of(&asked).len(),
            2,
            "again an hour later if it did not reboot"
        );
        let mut fresh = healthy("S1");
        fresh.uptime_secs = Some(1000.0);
        assert!(reboot_of(&care(&[(fresh, 0.0, true)]).1).is_empty());
    }

    #[test]
    fn booting_sets_and_clears() {
        let mut booting = healthy("S1");
        booting.booting = true;
        let a = assess(&Memory::default(), &[booting], &none(), &T);
        assert_eq!(maintenance(&a), vec!["booting: S1"]);
        let a = rounds(&[(vec![healthy("S1")], none())]);
        assert!(a.reasons.maintenance.is_empty());
    }

    #[test]
    fn a_phone_not_yet_interrogated_is_not_booting() {
        // Listed a moment ago: nothing known yet, so no reason that would flap.
        let fresh = Device::listed(DeviceKind::Android, "S1", Link::Device);
        let a = assess(&Memory::default(), &[fresh], &none(), &T);
        assert!(a.reasons.maintenance.is_empty(), "{:?}", a.reasons);
        assert!(a.reasons.quarantined.is_empty(), "{:?}", a.reasons);
    }

    #[test]
    fn booting_is_not_reported_while_rebooting_after_a_task() {
        let mut booting = healthy("S1");
        booting.booting = true;
        let a = assess(&Memory::default(), &[booting], &set(&["S1"]), &T);
        assert_eq!(maintenance(&a), vec!["rebooting S1 after task"]);
    }

    #[test]
    fn rebooting_phone_that_vanished_is_not_missing() {
        let a = rounds(&[(vec![healthy("S1")], none()), (vec![], set(&["S1"]))]);
        assert_eq!(maintenance(&a), vec!["rebooting S1 after task"]);
        assert!(a.reasons.quarantined.is_empty());
        assert!(missing(&a).is_empty());
    }

    #[test]
    fn rebooting_phone_shown_offline_is_not_reconnected() {
        let a = rounds(&[
            (vec![healthy("S1")], none()),
            (vec![in_state("S1", "offline")], set(&["S1"])),
            (vec![in_state("S1", "offline")], set(&["S1"])),
        ]);
        assert_eq!(maintenance(&a), vec!["rebooting S1 after task"]);
        assert!(a.reasons.quarantined.is_empty());
        assert!(a.actions.is_empty());
    }

    #[test]
    fn rebooting_clears_when_the_watcher_drops_the_serial() {
        let a = rounds(&[
            (vec![healthy("S1")], set(&["S1"])),
            (vec![healthy("S1")], none()),
        ]);
        assert_eq!(a.reasons, Reasons::default());
    }

    #[test]
    fn gone_missing_is_reported_until_the_phone_returns() {
        let gone = rounds(&[
            (vec![healthy("S1"), healthy("S2")], none()),
            (vec![healthy("S2")], none()),
        ]);
        assert_eq!(
            quarantined(&gone),
            vec!["device S1 (husky) has gone missing"]
        );
        let shown = missing(&gone);
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].serial, "S1");
        assert_eq!(shown[0].state_word(), "missing");
        assert_eq!(shown[0].device_type.as_deref(), Some("husky"));
        assert_eq!(
            shown[0].reasons.quarantined,
            vec!["device S1 (husky) has gone missing"]
        );

        let still = assess(&gone.memory, &[healthy("S2")], &none(), &T);
        assert_eq!(
            quarantined(&still),
            vec!["device S1 (husky) has gone missing"]
        );

        let back = assess(&still.memory, &[healthy("S1"), healthy("S2")], &none(), &T);
        assert_eq!(back.reasons, Reasons::default());
        assert!(missing(&back).is_empty());
    }

    #[test]
    fn missing_phone_of_unknown_type() {
        let a = rounds(&[
            (vec![in_state("R5", "unauthorized")], none()),
            (vec![], none()),
        ]);
        assert_eq!(
            quarantined(&a),
            vec!["device R5 (unknown type) has gone missing"]
        );
    }

    #[test]
    fn known_type_is_kept_when_a_later_round_does_not_know_it() {
        let a = rounds(&[
            (vec![healthy("S1")], none()),
            (vec![in_state("S1", "offline")], none()),
            (vec![], none()),
        ]);
        assert_eq!(quarantined(&a), vec!["device S1 (husky) has gone missing"]);
    }

    #[test]
    fn devices_given_as_missing_count_as_absent() {
        let a = rounds(&[
            (vec![healthy("S1")], none()),
            (
                vec![{
                    let mut d = healthy("S1");
                    d.state = State::Missing;
                    d
                }],
                none(),
            ),
        ]);
        assert_eq!(quarantined(&a), vec!["device S1 (husky) has gone missing"]);
        assert_eq!(missing(&a).len(), 1);
    }

    #[test]
    fn unauthorized_sets_and_clears() {
        let a = assess(
            &Memory::default(),
            &[in_state("R5", "unauthorized")],
            &none(),
            &T,
        );
        assert_eq!(
            quarantined(&a),
            vec!["device R5 is unauthorized: accept this host's adb key on the phone, or give the pod the adb key pair it was authorized with (Secret mounted at /root/.android)"]
        );
        let a = assess(&a.memory, &[healthy("R5")], &none(), &T);
        assert_eq!(a.reasons, Reasons::default());
    }

    #[test]
    fn no_permissions_sets_and_clears() {
        let a = assess(
            &Memory::default(),
            &[in_state("Z1", "no permissions")],
            &none(),
            &T,
        );
        assert_eq!(
            quarantined(&a),
            vec!["device Z1 has no USB permissions: run the pod privileged with /dev/bus/usb mounted, or fix the host's udev rules"]
        );
        let a = assess(&a.memory, &[healthy("Z1")], &none(), &T);
        assert_eq!(a.reasons, Reasons::default());
    }

    #[test]
    fn offline_first_reconnects_then_quarantines() {
        let offline = || vec![in_state("H1", "offline")];
        let first = assess(&Memory::default(), &offline(), &none(), &T);
        assert_eq!(maintenance(&first), vec!["device H1 offline, reconnecting"]);
        assert!(first.reasons.quarantined.is_empty());
        assert_eq!(first.actions, vec![Action::ReconnectOffline]);

        // The only phone, and stuck: the ladder goes on to the phone's own reconnect,
        // then to the adb server, then to a person.
        let second = assess(&first.memory, &offline(), &none(), &T);
        assert_eq!(
            maintenance(&second),
            vec!["device H1 offline, recovering: step 2, reconnect H1"]
        );
        assert_eq!(second.actions, vec![Action::Reconnect("H1".into())]);
        assert_eq!(second.devices[0].recovery_step, 2);
        let third = assess(&second.memory, &offline(), &none(), &T);
        assert_eq!(
            maintenance(&third),
            vec!["device H1 offline, recovering: step 3, restart the adb server"]
        );
        assert_eq!(third.actions, vec![Action::RestartAdbServer]);
        let fourth = assess(&third.memory, &offline(), &none(), &T);
        assert_eq!(
            quarantined(&fourth),
            vec!["device H1 is still offline after every recovery step: tried reconnect-offline, reconnect H1, restart the adb server (last: restart the adb server); check its USB cable and hub port, or replug it"]
        );
        assert!(fourth.reasons.maintenance.is_empty());
        assert!(fourth.actions.is_empty());
        assert_eq!(fourth.devices[0].recovery_step, 4);
        // The same reason round after round: it is set once.
        let fifth = assess(&fourth.memory, &offline(), &none(), &T);
        assert_eq!(fifth.reasons, fourth.reasons);
    }

    #[test]
    fn the_adb_server_is_restarted_only_when_every_phone_is_stuck_and_no_task_runs() {
        let stuck = in_state("H1", "offline");
        // Another phone answers: no server restart; a person after the phone's steps.
        let mut m = Memory::default();
        let mut last = None;
        for _ in 0..3 {
            let a = assess(&m, &[stuck.clone(), healthy("K")], &none(), &T);
            assert!(!a.actions.contains(&Action::RestartAdbServer));
            m = a.memory.clone();
            last = Some(a);
        }
        let q = last.unwrap().reasons.quarantined;
        assert_eq!(q.len(), 1);
        assert!(
            q[0].contains(
                "still offline after every recovery step: tried reconnect-offline, reconnect H1 (last: reconnect H1)"
            ),
            "{q:?}"
        );
        // Every phone stuck but a task runs: no restart either.
        let mut m = Memory::default();
        for _ in 0..3 {
            let a = Round::of(std::slice::from_ref(&stuck))
                .after(&m)
                .idle(false)
                .decide();
            assert!(!a.actions.contains(&Action::RestartAdbServer));
            m = a.memory.clone();
        }
    }

    #[test]
    fn a_handshake_does_not_use_up_the_offline_steps() {
        // Connecting for rounds (a slow auth), then offline: the ladder starts at step 1.
        let a = rounds(&[
            (vec![in_state("H1", "connecting")], none()),
            (vec![in_state("H1", "connecting")], none()),
            (vec![in_state("H1", "offline")], none()),
        ]);
        assert_eq!(maintenance(&a), vec!["device H1 offline, reconnecting"]);
        assert_eq!(a.actions, vec![Action::ReconnectOffline]);
    }

    #[test]
    fn a_phone_dropped_by_a_reconnect_keeps_its_place_on_the_ladder() {
        let a = rounds(&[
            (vec![in_state("H1", "offline"), healthy("K")], none()),
            (vec![healthy("K")], none()),
            (vec![in_state("H1", "connecting"), healthy("K")], none()),
            (vec![in_state("H1", "offline"), healthy("K")], none()),
        ]);
        assert_eq!(
            maintenance(&a),
            vec!["device H1 offline, recovering: step 2, reconnect H1"]
        );
    }

    #[test]
    fn the_usb_steps_are_opt_in_need_a_usb_path_and_resets_are_rate_limited() {
        let t = Thresholds {
            usb_reset: true,
            usb_power_cycle: true,
            ..T
        };
        let mut phone = in_state("H1", "offline");
        phone.usb_path = Some("usb:1-1.4".into());
        let run = |m: &Memory, d: &Device, now: f64| {
            Round::of(&[d.clone(), healthy("K")])
                .after(m)
                .thresholds(t)
                .at(now)
                .decide()
        };
        let mut m = Memory::default();
        let mut steps = Vec::new();
        for round in 0..6 {
            let a = run(&m, &phone, f64::from(round) * 30.0);
            steps.extend(a.actions.clone());
            m = a.memory.clone();
            if round == 3 {
                assert!(
                    maintenance(&a)[0].contains("step 4, power cycle of usb:1-1.4's hub port"),
                    "{:?}",
                    a.reasons
                );
            }
            if round == 4 {
                assert!(
                    quarantined(&a)[0].contains("tried reconnect-offline, reconnect H1, USB reset of usb:1-1.4, power cycle of usb:1-1.4's hub port"),
                    "{:?}",
                    a.reasons
                );
            }
        }
        let h1 = || "H1".to_string();
        let path = || "usb:1-1.4".to_string();
        assert_eq!(
            steps,
            vec![
                Action::ReconnectOffline,
                Action::Reconnect(h1()),
                Action::UsbReset {
                    serial: h1(),
                    devpath: path()
                },
                Action::PowerCycle {
                    serial: h1(),
                    devpath: path()
                },
            ]
        );
        // Back, then stuck again within the hour: no second reset.
        let mut m = run(&m, &healthy("H1"), 200.0).memory;
        let mut again = Vec::new();
        for round in 0..3 {
            let a = run(&m, &phone, 300.0 + f64::from(round) * 30.0);
            again.extend(a.actions.clone());
            m = a.memory.clone();
        }
        assert!(
            !again.iter().any(|a| matches!(a, Action::UsbReset { .. })),
            "{again:?}"
        );
        // While a task runs, no USB step.
        let mut m = Memory::default();
        for round in 0..4 {
            let a = Round::of(&[phone.clone(), healthy("K")])
                .after(&m)
                .thresholds(t)
                .at(f64::from(round))
                .idle(false)
                .decide();
            assert!(!a
                .actions
                .iter()
                .any(|a| matches!(a, Action::UsbReset { .. } | Action::PowerCycle { .. })));
            m = a.memory.clone();
        }
        // A phone on TCP has no USB path: no USB step.
        let tcp = in_state("127.0.0.1:5555", "offline");
        let mut m = Memory::default();
        for round in 0..4 {
            let a = run(&m, &tcp, f64::from(round));
            assert!(!a
                .actions
                .iter()
                .any(|a| matches!(a, Action::UsbReset { .. } | Action::PowerCycle { .. })));
            m = a.memory.clone();
        }
    }

    #[test]
    fn offline_clears_and_counts_again_from_one() {
        let a = rounds(&[
            (vec![in_state("H1", "offline")], none()),
            (vec![in_state("H1", "offline")], none()),
            (vec![healthy("H1")], none()),
        ]);
        assert_eq!(a.reasons, Reasons::default());
        let again = assess(&a.memory, &[in_state("H1", "offline")], &none(), &T);
        assert_eq!(maintenance(&again), vec!["device H1 offline, reconnecting"]);
        assert_eq!(again.actions, vec![Action::ReconnectOffline]);
    }

    #[test]
    fn offline_rounds_must_be_consecutive() {
        let a = rounds(&[
            (vec![in_state("H1", "offline")], none()),
            (vec![healthy("H1")], none()),
            (vec![in_state("H1", "offline")], none()),
        ]);
        assert!(a.reasons.quarantined.is_empty());
        assert_eq!(maintenance(&a), vec!["device H1 offline, reconnecting"]);
    }

    #[test]
    fn several_offline_phones_share_one_reconnect() {
        let a = assess(
            &Memory::default(),
            &[in_state("H1", "offline"), in_state("H2", "offline")],
            &none(),
            &T,
        );
        assert_eq!(a.actions, vec![Action::ReconnectOffline]);
        assert_eq!(
            maintenance(&a),
            vec![
                "device H1 offline, reconnecting",
                "device H2 offline, reconnecting"
            ]
        );
    }

    #[test]
    fn several_phones_with_mixed_faults_give_sorted_reasons() {
        let mut hot_low = healthy("B2");
        hot_low.battery_percent = Some(12.0);
        hot_low.temperatures = vec![Temperature {
            sensor: "battery".into(),
            celsius: 44.5,
        }];
        let a = rounds(&[
            (vec![healthy("A1"), healthy("Z9")], none()),
            (
                vec![
                    healthy("A1"),
                    hot_low,
                    in_state("C3", "unauthorized"),
                    in_state("D4", "no permissions"),
                ],
                set(&["E5"]),
            ),
        ]);
        assert_eq!(
            quarantined(&a),
            vec![
                "device C3 is unauthorized: accept this host's adb key on the phone, or give the pod the adb key pair it was authorized with (Secret mounted at /root/.android)",
                "device D4 has no USB permissions: run the pod privileged with /dev/bus/usb mounted, or fix the host's udev rules",
                "device Z9 (husky) has gone missing",
            ]
        );
        assert_eq!(
            maintenance(&a),
            vec![
                "battery low: B2 12% (< 30%)",
                "rebooting E5 after task",
                "too hot: B2 battery 44.5°C (> 35°C)",
            ]
        );
        assert_eq!(
            missing(&a)
                .iter()
                .map(|d| d.serial.as_str())
                .collect::<Vec<_>>(),
            vec!["Z9"]
        );
    }

    #[test]
    fn same_reason_twice_is_listed_once() {
        let a = assess(
            &Memory::default(),
            &[
                in_state("R5", "unauthorized"),
                in_state("R5", "unauthorized"),
            ],
            &none(),
            &T,
        );
        assert_eq!(a.reasons.quarantined.len(), 1);
    }

    #[test]
    fn ios_devices_follow_the_same_rules_and_keep_their_kind_when_missing() {
        let mut phone = Device::listed(DeviceKind::Ios, "00008030-001A", Link::Device);
        phone.fault = None;
        phone.device_type = Some("iPhone14,2".into());
        phone.battery_percent = Some(10.0);
        let first = assess(&Memory::default(), &[phone], &none(), &T);
        assert_eq!(
            maintenance(&first),
            vec!["battery low: 00008030-001A 10% (< 30%)"]
        );
        let gone = assess(&first.memory, &[], &none(), &T);
        assert_eq!(
            quarantined(&gone),
            vec!["device 00008030-001A (iPhone14,2) has gone missing"]
        );
        assert_eq!(missing(&gone)[0].kind, DeviceKind::Ios);
    }

    #[test]
    fn a_phone_listed_online_that_stops_answering_reconnects_then_quarantines() {
        // The adb server keeps listing a wedged phone as `device`: its rounds fail.
        let first = rounds(&[
            (vec![healthy("W1")], none()),
            (vec![not_answering("W1", false)], none()),
        ]);
        assert_eq!(
            maintenance(&first),
            vec!["device W1 not answering (timed out), reconnecting"]
        );
        assert_eq!(first.actions, vec![Action::Reconnect("W1".into())]);
        assert_eq!(first.devices[0].verdict_word(), "maintenance");
        // The only phone, stuck: the adb server is the next step, then a person.
        let second = assess(&first.memory, &[not_answering("W1", false)], &none(), &T);
        assert_eq!(
            maintenance(&second),
            vec!["device W1 not answering (timed out), recovering: step 2, restart the adb server"]
        );
        assert_eq!(second.actions, vec![Action::RestartAdbServer]);
        let third = assess(&second.memory, &[not_answering("W1", false)], &none(), &T);
        assert_eq!(quarantined(&third).len(), 1);
        let q = quarantined(&third)[0];
        assert!(
            q.starts_with("device W1 still does not answer after every recovery step (last: timed out): tried reconnect W1, restart the adb server (last: restart the adb server); ")
                && q.contains("adb -s W1 reboot"),
            "{q}"
        );
        assert!(third.actions.is_empty());
        assert_eq!(third.devices[0].verdict_word(), "quarantined");
        // It answers again: usable, and the count starts over.
        let back = assess(&third.memory, &[healthy("W1")], &none(), &T);
        assert_eq!(back.reasons, Reasons::default());
        let again = assess(&back.memory, &[not_answering("W1", false)], &none(), &T);
        assert!(again.reasons.quarantined.is_empty());
    }

    #[test]
    fn a_transport_that_answers_device_offline_takes_the_offline_path() {
        let first = assess(
            &Memory::default(),
            &[not_answering("H1", true)],
            &none(),
            &T,
        );
        assert_eq!(maintenance(&first), vec!["device H1 offline, reconnecting"]);
        assert_eq!(first.actions, vec![Action::ReconnectOffline]);
        // Listed offline the next round: the same count goes on.
        let second = assess(&first.memory, &[in_state("H1", "offline")], &none(), &T);
        assert_eq!(
            maintenance(&second),
            vec!["device H1 offline, recovering: step 2, reconnect H1"]
        );
    }

    #[test]
    fn an_iphone_that_stops_answering_is_reported_without_an_adb_action() {
        let mut phone = Device::listed(DeviceKind::Ios, "00008030-001A", Link::Device);
        phone.fault = Some(Fault::NotAnswering {
            why: "ideviceinfo exited 255".into(),
            offline: false,
        });
        let first = assess(&Memory::default(), &[phone.clone()], &none(), &T);
        assert_eq!(
            maintenance(&first),
            vec!["device 00008030-001A not answering (ideviceinfo exited 255)"]
        );
        assert!(first.actions.is_empty());
        let second = assess(&first.memory, &[phone], &none(), &T);
        assert!(quarantined(&second)[0].contains("unlocked and paired"));
    }

    #[test]
    fn every_present_phone_that_cannot_take_tasks_has_a_reason() {
        let mut booting = healthy("B");
        booting.booting = true;
        booting.fault = Some(Fault::Booting);
        let mut unlisted = healthy("I");
        unlisted.kind = DeviceKind::Ios;
        unlisted.fault = Some(Fault::Unlisted(ListingFailure {
            error: "idevice_id timed out".into(),
            needs_person: false,
        }));
        let phones = vec![
            booting,
            unlisted,
            in_state("C", "connecting"),
            in_state("D", "bootloader"),
            in_state("E", "sideload-auto-reboot"),
            in_state("O", "offline"),
            in_state("U", "unauthorized"),
            not_answering("W", false),
        ];
        // Twice: a handshake is only reported once it has lasted N rounds.
        let first = assess(&Memory::default(), &phones, &none(), &T);
        let a = assess(&first.memory, &phones, &none(), &T);
        for d in &a.devices {
            assert!(d.fault.is_none() || d.verdict_word() != "usable", "{d:?}");
        }
        assert!(first
            .devices
            .iter()
            .any(|d| d.serial == "C" && d.verdict_word() == "usable"));
        let d = quarantined(&a);
        assert!(d.contains(&"device D is in adb state bootloader, not Android: reboot it (adb -s D reboot) or replug it"), "{d:?}");
        assert!(
            d.iter()
                .any(|r| r.contains("adb state sideload-auto-reboot")),
            "{d:?}"
        );
        assert!(maintenance(&a).contains(&"device C has been connecting for 2 rounds"));
        assert!(maintenance(&a).contains(&"cannot list the iPhones: idevice_id timed out"));
    }

    #[test]
    fn each_phone_carries_only_its_own_reasons_and_the_bot_all_of_them() {
        let mut hot = healthy("H");
        hot.temperatures[0].celsius = 40.0;
        let host = Host {
            iphones_unlisted: Some(ListingFailure {
                error: "no idevice_id".into(),
                needs_person: true,
            }),
            ..Host::default()
        };
        let a = Round::of(&[hot, healthy("K"), in_state("U", "unauthorized")])
            .host(host)
            .decide();
        let by = |s: &str| a.devices.iter().find(|d| d.serial == s).unwrap();
        assert_eq!(
            by("H").reasons.maintenance,
            vec!["too hot: H battery 40.0°C (> 35°C)"]
        );
        assert!(by("H").reasons.quarantined.is_empty());
        assert_eq!(by("K").reasons, Reasons::default());
        assert_eq!(by("K").verdict_word(), "usable");
        assert_eq!(by("U").reasons.quarantined, vec![unauthorized_reason("U")]);
        assert_eq!(
            quarantined(&a),
            vec![
                "cannot list the iPhones: no idevice_id".to_string(),
                unauthorized_reason("U")
            ]
        );
        assert_eq!(maintenance(&a), vec!["too hot: H battery 40.0°C (> 35°C)"]);
    }

    #[test]
    fn the_hosts_facts_hold_back_the_bot_sorted() {
        let host = Host {
            adb_server_silent: Some("no answer within 2s".into()),
            iphones_unlisted: Some(ListingFailure {
                error: "idevice_id -l: no answer within 5s".into(),
                needs_person: false,
            }),
        };
        let a = Round::of(&[healthy("K")])
            .host(host)
            .notes(notes(Some("new hub"), &[]))
            .decide();
        let want = vec![
            "adb server not answering: no answer within 2s",
            "cannot list the iPhones: idevice_id -l: no answer within 5s",
            "maintenance: new hub",
        ];
        assert_eq!(maintenance(&a), want);
        assert_eq!(a.host_reasons.maintenance, want);
        assert!(quarantined(&a).is_empty());
        assert_eq!(
            a.devices[0].reasons,
            Reasons::default(),
            "the phone is fine"
        );
    }

    fn notes(pi: Option<&str>, phones: &[(&str, &str)]) -> Notes {
        Notes {
            pi: pi.map(str::to_string),
            phones: phones
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn noted(devices: &[Device], n: &Notes) -> Outcome {
        Round::of(devices).notes(n.clone()).decide()
    }

    #[test]
    fn a_phone_note_puts_that_phone_alone_in_maintenance() {
        // The serial is matched as a bot id writes it: ':' becomes '-'.
        let n = notes(None, &[("10.0.0.7-5555", "cracked screen")]);
        let a = noted(&[healthy("10.0.0.7:5555"), healthy("K")], &n);
        let by = |s: &str| a.devices.iter().find(|d| d.serial == s).unwrap();
        assert_eq!(
            by("10.0.0.7:5555").reasons.maintenance,
            vec!["maintenance: 10.0.0.7:5555: cracked screen"]
        );
        assert_eq!(by("10.0.0.7:5555").verdict_word(), "maintenance");
        assert_eq!(by("K").verdict_word(), "usable");
        assert_eq!(
            maintenance(&a),
            vec!["maintenance: 10.0.0.7:5555: cracked screen"]
        );
        assert!(a.host_reasons.maintenance.is_empty());
    }

    #[test]
    fn the_pi_note_holds_back_every_bot_and_leaves_the_phones_usable() {
        let n = notes(Some("new USB hub (ana)"), &[]);
        let a = noted(&[healthy("S1"), healthy("K")], &n);
        assert_eq!(maintenance(&a), vec!["maintenance: new USB hub (ana)"]);
        assert_eq!(
            a.host_reasons.maintenance,
            vec!["maintenance: new USB hub (ana)"]
        );
        assert!(a.devices.iter().all(|d| d.verdict_word() == "usable"));
    }

    #[test]
    fn a_note_cleared_clears_its_reason_and_notes_of_absent_phones_do_nothing() {
        let n = notes(None, &[("GONE", "in a drawer")]);
        let a = noted(&[healthy("S1")], &n);
        assert!(a.reasons.maintenance.is_empty());
        let b = noted(&[healthy("S1")], &Notes::default());
        assert!(b.reasons.maintenance.is_empty());
        assert!(b.devices.iter().all(|d| d.verdict_word() == "usable"));
    }

    #[test]
    fn a_noted_phone_gone_missing_keeps_its_note_beside_the_quarantine() {
        let first = noted(&[healthy("S1")], &Notes::default());
        let n = notes(None, &[("S1", "sent for repair")]);
        let a = Round::of(&[])
            .after(&first.memory)
            .notes(n.clone())
            .at(1.0)
            .decide();
        assert_eq!(
            a.devices[0].reasons.maintenance,
            vec!["maintenance: S1: sent for repair"]
        );
        assert_eq!(a.devices[0].verdict_word(), "quarantined");
    }

    #[test]
    fn per_device_each_bot_reports_its_own_phones_note_and_the_pis() {
        let n = notes(Some("rewiring"), &[("A", "cracked screen")]);
        let a = noted(&[healthy("A"), healthy("K")], &n);
        let snapshot = crate::state::snapshot::Snapshot {
            devices: a.devices,
            reasons: a.reasons,
            host_reasons: a.host_reasons,
            ..Default::default()
        };
        assert_eq!(
            phone_view(&snapshot, "A").reasons.maintenance,
            vec!["maintenance: A: cracked screen", "maintenance: rewiring"]
        );
        assert_eq!(
            phone_view(&snapshot, "K").reasons.maintenance,
            vec!["maintenance: rewiring"]
        );
    }
}
