//! The immutable picture of the phones that every reader shares.
//!
//! The device watcher builds a new [`Snapshot`] after each round and swaps it in whole
//! (see `state::SnapshotCell::publish`); the hook and metrics servers clone the `Arc`
//! and never wait on adb or on a lock held across I/O. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};

/// Dimensions as Swarming takes them: key to a non-empty list of values.
pub type Dimensions = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    Android,
    Ios,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Android => "android",
            DeviceKind::Ios => "ios",
        }
    }
}

/// One temperature reading that counts for health.
#[derive(Debug, Clone, PartialEq)]
pub struct Temperature {
    /// The sensor's name as the phone reports it (`battery`, `cpu0`, `TYPE_SKIN`...).
    pub sensor: String,
    pub celsius: f64,
}

/// What adb (or, for an iPhone, usbmuxd) says of a phone's link. `parse::devices_l`
/// turns adb's word into this once; nothing else compares state strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    Device,
    Offline,
    /// A transport in its handshake, or an `offline` younger than the settling time.
    Connecting,
    Authorizing,
    Unauthorized,
    NoPermissions,
    Bootloader,
    Recovery,
    Sideload,
    Rescue,
    Host,
    Detached,
    /// A word this program does not know (a newer adb's), kept as adb printed it.
    Other(String),
}

impl Link {
    /// adb's word (`device`, `no permissions`, ...) as a [`Link`].
    pub fn from_adb(word: &str) -> Link {
        match word {
            "device" => Link::Device,
            "offline" => Link::Offline,
            "connecting" => Link::Connecting,
            "authorizing" => Link::Authorizing,
            "unauthorized" => Link::Unauthorized,
            "no permissions" => Link::NoPermissions,
            "bootloader" => Link::Bootloader,
            "recovery" => Link::Recovery,
            "sideload" => Link::Sideload,
            "rescue" => Link::Rescue,
            "host" => Link::Host,
            "detached" => Link::Detached,
            other => Link::Other(other.to_string()),
        }
    }

    /// adb's word for it.
    pub fn as_str(&self) -> &str {
        match self {
            Link::Device => "device",
            Link::Offline => "offline",
            Link::Connecting => "connecting",
            Link::Authorizing => "authorizing",
            Link::Unauthorized => "unauthorized",
            Link::NoPermissions => "no permissions",
            Link::Bootloader => "bootloader",
            Link::Recovery => "recovery",
            Link::Sideload => "sideload",
            Link::Rescue => "rescue",
            Link::Host => "host",
            Link::Detached => "detached",
            Link::Other(word) => word,
        }
    }
}

/// Where a phone is, as the snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Listed now, with its link state.
    Listed(Link),
    /// Rebooted after a task and not back yet (it may be unlisted meanwhile).
    Rebooting,
    /// Seen before and not listed now.
    Missing,
}

/// Why a listed phone cannot take tasks, as the watcher found it. The verdict turns
/// each into a reason; this is only the fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Listed a moment ago; its first round has not finished.
    NotInterrogated,
    /// Its link is not `device` (see [`Device::state`]).
    LinkNotReady,
    /// It answered and has not finished booting.
    Booting,
    /// Rebooted and not back yet; what for (`after task`, `for its care: up for 25.1 h`).
    Rebooting(String),
    /// Its round could not read it. `offline` when the adb server answered the
    /// transport with `device offline`: the link is gone although the list says `device`.
    NotAnswering { why: String, offline: bool },
    /// Its shell answers, but not with properties the round can read (the shell's own
    /// error, or output that does not parse): a person must look, no reconnect helps.
    Unreadable(String),
    /// The iPhones could not be listed; this one is kept from the last listing.
    Unlisted(ListingFailure),
}

/// Why the iPhones could not be listed: the fact the verdict turns into a reason, for
/// each known iPhone and for the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingFailure {
    /// The listing tool's error, as it explains itself.
    pub error: String,
    /// Everything but a timeout, which a slow usbmuxd may get over by the next round.
    pub needs_person: bool,
}

/// What we know of one phone after its latest round.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub kind: DeviceKind,
    pub serial: String,
    pub state: State,
    /// The phone's name: `ro.product.device` (else `ro.build.product`, else
    /// `ro.product.board`), or the iOS `ProductType`, once known.
    pub device_type: Option<String>,
    /// What people call it: `ro.product.model` (`Pixel 5`), or the iOS `ProductType`.
    pub model: Option<String>,
    /// Where it is on USB, as adb lists it (`usb:1-1.4`); none on TCP or for an iPhone.
    pub usb_path: Option<String>,
    /// Unix seconds when its last round read it.
    pub read_at_unix: Option<f64>,
    pub battery_percent: Option<f64>,
    /// On external power (AC, USB, wireless or dock), when the phone says.
    pub powered: Option<bool>,
    /// BatteryManager's health code (2 good, 3 overheat, 4 dead, 5 over voltage, ...).
    pub battery_health: Option<u8>,
    /// Free bytes on `/data`, when read.
    pub data_free_bytes: Option<u64>,
    pub temperatures: Vec<Temperature>,
    pub uptime_secs: Option<f64>,
    /// The phone answered and says it has not finished booting (`sys.boot_completed`
    /// is not `1`). False when that is not known yet: a phone listed a moment ago and
    /// not yet interrogated is not reported as booting.
    pub booting: bool,
    /// A one-word build description (`<ro.build.id>_<incremental>`, or the iOS version).
    pub build: Option<String>,
    /// This phone's own contribution to the dimensions (empty when it is not usable).
    pub dimensions: Dimensions,
    /// Why the phone cannot run tasks, when it cannot.
    pub fault: Option<Fault>,
    /// Values every phone has that its last round could not read (`dumpsys battery: no
    /// level`): counted, logged and shown, so that a rule never passes for want of data.
    pub missing_values: Vec<String>,
    /// How long it has had its current verdict, in seconds (see `verdict::decide`).
    pub verdict_for_secs: f64,
    /// The recovery step it is at (its consecutive failed rounds), 0 when not failing.
    pub recovery_step: u32,
    /// The verdict's reasons for this phone alone (see `verdict::decide`); empty lists
    /// mean it is usable.
    pub reasons: Reasons,
}

impl Device {
    /// A phone that is listed but not (yet) interrogated.
    pub fn listed(kind: DeviceKind, serial: &str, link: Link) -> Device {
        Device {
            kind,
            serial: serial.to_string(),
            state: State::Listed(link),
            device_type: None,
            model: None,
            usb_path: None,
            read_at_unix: None,
            battery_percent: None,
            powered: None,
            battery_health: None,
            data_free_bytes: None,
            temperatures: Vec::new(),
            uptime_secs: None,
            booting: false,
            build: None,
            dimensions: Dimensions::new(),
            fault: Some(Fault::NotInterrogated),
            missing_values: Vec::new(),
            verdict_for_secs: 0.0,
            recovery_step: 0,
            reasons: Reasons::default(),
        }
    }

    /// Marks a phone the watcher rebooted after a task and has not seen come back: it
    /// keeps its last facts, offers no dimensions of its own, and the verdict holds it
    /// in maintenance. The watcher's `publish` is the one caller.
    pub fn mark_rebooting(&mut self, what_for: &str) {
        self.state = State::Rebooting;
        self.fault = Some(Fault::Rebooting(what_for.to_string()));
        self.dimensions.clear();
    }

    /// The link state, when the phone is listed.
    pub fn link(&self) -> Option<&Link> {
        match &self.state {
            State::Listed(l) => Some(l),
            _ => None,
        }
    }

    /// One word for the state, as `/metrics`, the hooks and the logs show it: `missing`,
    /// `rebooting`, `booting` (online, boot not completed), or the link's word.
    pub fn state_word(&self) -> &str {
        match &self.state {
            State::Missing => "missing",
            State::Rebooting => "rebooting",
            State::Listed(Link::Device) if self.booting => "booting",
            State::Listed(l) => l.as_str(),
        }
    }

    /// Whether the phone can be given tasks as far as its link and round go (the
    /// dimensions count it); heat or a low battery may still hold the bot back.
    pub fn reachable(&self) -> bool {
        self.fault.is_none()
    }

    /// Why it cannot run tasks, in words, when it cannot.
    pub fn unusable(&self) -> Option<String> {
        Some(match self.fault.as_ref()? {
            Fault::NotInterrogated => "not interrogated yet".to_string(),
            Fault::LinkNotReady => format!("adb state {}", self.state_word()),
            Fault::Booting => "booting".to_string(),
            Fault::Rebooting(what_for) => format!("rebooting {what_for}"),
            Fault::NotAnswering { why, .. } => format!("not answering: {why}"),
            Fault::Unreadable(why) => format!("unreadable: {why}"),
            Fault::Unlisted(f) => format!("cannot list the iPhones: {}", f.error),
        })
    }

    /// The hottest sensor it reports, if any.
    pub fn hottest(&self) -> Option<&Temperature> {
        self.temperatures
            .iter()
            .max_by(|a, b| a.celsius.total_cmp(&b.celsius))
    }

    /// usable, maintenance or quarantined, from its reasons.
    pub fn verdict_word(&self) -> &'static str {
        if !self.reasons.quarantined.is_empty() {
            "quarantined"
        } else if !self.reasons.maintenance.is_empty() {
            "maintenance"
        } else {
            "usable"
        }
    }
}

/// Reasons that reach Swarming in the state, for the bot or for one phone. Both lists
/// are sorted and free of duplicates; an empty list means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reasons {
    /// Faults that need a person: unauthorized, gone missing, forced.
    pub quarantined: Vec<String>,
    /// Conditions that clear by themselves: too hot, battery low, rebooting, booting.
    pub maintenance: Vec<String>,
}

/// Everything the hooks and metrics report about the phones, as of one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Unix seconds when the round that built this snapshot finished.
    pub taken_at_unix: f64,
    /// Sorted by kind, then serial.
    pub devices: Vec<Device>,
    /// The merged device dimensions (without `id`; the hook server adds it).
    pub dimensions: Dimensions,
    /// The bot's reasons: every phone's, and the host's own (an iPhone listing that
    /// failed). The forced quarantine is added by `verdict::with_forced`.
    pub reasons: Reasons,
    /// The reasons that belong to no single phone, which every phone's bot reports too
    /// (`--bots per-device`).
    pub host_reasons: Reasons,
    /// By serial, the dimensions a bot of that phone alone offers (`--bots per-device`):
    /// what `dimensions` would be were it the only phone; only the phones that count
    /// for dimensions (usable, or being rebooted) are here.
    pub phone_dimensions: BTreeMap<String, Dimensions>,
    /// The phones whose own bot runs a task now (`--bots per-device`).
    pub busy_phones: BTreeSet<String>,
}

/// What a bot of one phone reports (`--bots per-device`); `verdict::phone_view` makes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhoneView {
    pub dimensions: Dimensions,
    /// The phone's own reasons and the host's.
    pub reasons: Reasons,
}

/// What changed between two snapshots, as operator events: a device that appeared,
/// disappeared or changed state, and each reason set or cleared.
pub fn changes(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let states = |s: &Snapshot| -> BTreeMap<String, (String, Option<String>)> {
        s.devices
            .iter()
            .map(|d| (d.serial.clone(), (d.state_word().to_string(), d.unusable())))
            .collect()
    };
    let (before, after) = (states(old), states(new));
    for (serial, (state, unusable)) in &after {
        match before.get(serial) {
            None => out.push(format!("device {serial} appeared: {state}")),
            Some((was, _)) if was != state => {
                out.push(format!("device {serial} changed state: {was} -> {state}"))
            }
            Some((_, was)) if was != unusable => out.push(match unusable {
                Some(why) => format!("device {serial} is not usable: {why}"),
                None => format!("device {serial} is usable"),
            }),
            Some(_) => {}
        }
    }
    for serial in before.keys().filter(|s| !after.contains_key(*s)) {
        out.push(format!("device {serial} disappeared"));
    }
    let mut diff = |kind: &str, was: &[String], now: &[String]| {
        for r in now.iter().filter(|r| !was.contains(r)) {
            out.push(format!("{kind} reason set: {r}"));
        }
        for r in was.iter().filter(|r| !now.contains(r)) {
            out.push(format!("{kind} reason cleared: {r}"));
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
    out
}

/// A phone listed online whose round read it: the starting point of most tests.
#[cfg(test)]
pub fn usable_device(kind: DeviceKind, serial: &str) -> Device {
    let mut d = Device::listed(kind, serial, Link::Device);
    d.fault = None;
    d
}
