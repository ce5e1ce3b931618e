//! The immutable picture of the phones that every reader shares.
//!
//! The device watcher builds a new [`Snapshot`] after each round and swaps it in whole
//! (see `state::Shared::publish_snapshot`); the hook and metrics servers clone the `Arc`
//! and never wait on adb or on a lock held across I/O. Nothing here does I/O.

use std::collections::BTreeMap;

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

/// What we know of one phone after its latest round.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub kind: DeviceKind,
    pub serial: String,
    /// The transport state: adb's word (`device`, `offline`, `unauthorized`,
    /// `no permissions`, ...), `missing` for a phone that was seen and is gone, or for
    /// iOS `device` when the tools answered.
    pub state: String,
    /// `ro.product.device` or the iOS `ProductType`, once known.
    pub device_type: Option<String>,
    pub battery_percent: Option<f64>,
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
    pub unusable: Option<String>,
}

impl Device {
    /// A phone that is listed but not (yet) interrogated.
    pub fn listed(kind: DeviceKind, serial: &str, state: &str) -> Device {
        Device {
            kind,
            serial: serial.to_string(),
            state: state.to_string(),
            device_type: None,
            battery_percent: None,
            temperatures: Vec::new(),
            uptime_secs: None,
            booting: false,
            build: None,
            dimensions: Dimensions::new(),
            unusable: None,
        }
    }
}

/// Reasons that reach Swarming in the state. Both lists are sorted and free of
/// duplicates; an empty list means "not set".
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
    pub reasons: Reasons,
}
