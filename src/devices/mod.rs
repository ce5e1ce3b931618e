//! The phones: everything that decides what the bot and the operators are told about them.
//!
//! - `watcher`: the event loop that owns the phones' state, over two small traits (the
//!   Android side and the iPhone side) and a round clock, so that tests drive it with
//!   fakes under tokio's paused time;
//! - `android`: the Android side for real, through the adb server protocol: the device
//!   list, one round per phone as one script, reboots, reconnects; and the pure step from
//!   a listing and a round to a [`Device`](crate::state::snapshot::Device);
//! - `verdict`: the one place a phone's fate is decided, its recovery ladder included;
//! - `usb`: the opt-in USB steps of that ladder (a reset, a hub port power cycle);
//! - `phones`: the traits the watcher drives (Android, iPhones, the round clock);
//! - `round`: one round, every phone at once under its deadline;
//! - `kept_shells`: each phone's shell kept open between rounds, its script sent on stdin;
//! - `actions`: the ladder's edge steps (reconnects, restart, USB), started off the loop;
//! - `budget`: every deadline of a round, from `--interrogate-every`.
//!
//! - `adb`: the adb server's host protocol (codec, client) and the server child;
//! - `parse`: pure parsers of what adb and the phones print;
//! - `ios`: the iPhones, through libimobiledevice's tools and usbmuxd;
//! - `dimensions`: pure, properties to Swarming dimensions.
//!
//! [`Context`] is what the folder is given by `app`: its configuration, the counters,
//! and the handles it alone writes.

mod actions;
pub mod adb;
pub mod android;
pub mod budget;
pub mod dimensions;
pub mod ios;
mod kept_shells;
pub mod parse;
mod phones;
mod reading;
mod round;
pub mod usb;
pub mod verdict;
mod watcher;

pub use watcher::run;

use std::sync::Arc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::DeviceKinds;
use crate::state::metrics::Metrics;
use crate::state::{Events, Liveness, NodeNotes, Shared, SnapshotCell};

/// The part of the configuration the phones' side reads, so that its tests build it
/// rather than parse a command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub devices: DeviceKinds,
    pub interrogate_every: Duration,
    pub no_reboot_after_task: bool,
    /// `--power-off-seconds`, for the hub port power cycle.
    pub power_off: Duration,
    pub adb: PathBuf,
    pub adb_server: SocketAddr,
    pub usbmuxd: PathBuf,
    pub ios: ios::Tools,
    pub thresholds: verdict::Thresholds,
}

/// What the watcher is given: its settings, the counters, and the handles it writes
/// (the snapshot and its events, the proof of life of its tick).
pub struct Context {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<SnapshotCell>,
    pub events: Arc<Events>,
    pub liveness: Arc<Liveness>,
    /// The operators' notes (the node's annotations), written by the Kubernetes client.
    pub notes: Arc<NodeNotes>,
}

impl Context {
    /// The watcher's handles out of `app`'s bundle.
    pub fn of(shared: &Shared, settings: Settings) -> Context {
        Context {
            settings,
            metrics: shared.metrics.clone(),
            snapshot: shared.snapshot.clone(),
            events: shared.events.clone(),
            liveness: shared.liveness.clone(),
            notes: shared.notes.clone(),
        }
    }
}
