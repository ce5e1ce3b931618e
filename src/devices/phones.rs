//! What the watcher needs of the phones, as traits, so that its tests drive it with
//! fakes under tokio's paused time: [`AndroidPhones`] (the adb server, for real in
//! `android`), [`IosPhones`] (libimobiledevice's tools, for real [`IosTools`] here) and the
//! round [`Clock`] (the timerfd `Ticker`, for real).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use std::collections::BTreeMap;

use crate::devices::adb::client::ShellProtocol;
use crate::devices::dimensions;
use crate::devices::ios;
use crate::devices::parse::battery::Battery;
use crate::runtime::clock::Ticker;
use crate::runtime::reaper::Reaper;
use crate::runtime::shutdown::Shutdown;
use crate::state::metrics::Metrics;
use crate::state::snapshot::{Device, Temperature};

/// Props of one phone, as `getprop` printed them.
pub type Props = BTreeMap<String, String>;

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
    /// The phone's shell answered the query that left `props` missing (with its own
    /// error, or with output that does not parse): its link works, so `failure` is no
    /// reason to reconnect it.
    pub answered: bool,
    /// The adb server answered the transport with `device offline`: the link is gone
    /// although the device list may still say `device`.
    pub offline: bool,
    /// Values every phone has that this round could not read, with why.
    pub missing_values: Vec<String>,
    /// Unix seconds when the round ended (set by the watcher).
    pub at_unix: Option<f64>,
    /// Free bytes on `/data`.
    pub data_free: Option<u64>,
    /// The shell protocol the phone's features called for, once they were read.
    pub protocol: Option<ShellProtocol>,
    /// This round showed the adb server answering (an `OKAY`, a `FAIL`, or output that
    /// came through it), whatever the phone did: the round needs no probe of its own.
    /// False says only that this round did not show it.
    pub server_answered: bool,
}

/// A boxed future the loop can spawn.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the watcher needs of the Android phones (the adb server, for real).
pub trait AndroidPhones: Send + Sync {
    /// Follows the device list until shutdown, sending every full list as it comes.
    fn track(&self, lists: mpsc::UnboundedSender<String>, shutdown: Shutdown) -> BoxFuture<()>;
    /// The device list now, asked once, in the tracker's format.
    fn list_now(&self) -> BoxFuture<Result<String, String>>;
    /// One phone's round; whatever finished before `until` counts.
    fn interrogate(
        &self,
        serial: &str,
        known: Option<ShellProtocol>,
        until: tokio::time::Instant,
    ) -> BoxFuture<PhoneRound>;
    /// A round starts for the phones in `online`: the kept-open shells of the others
    /// are closed, and the moment the round reads the kept ones is set.
    fn start_round(&self, online: &[&str]);
    /// Reboots the phone and waits until it is back (the caller owns the deadline).
    fn reboot(&self, serial: &str, protocol: ShellProtocol) -> BoxFuture<Result<(), String>>;
    /// Kicks one phone's transport.
    fn reconnect(&self, serial: &str) -> BoxFuture<Result<(), String>>;
    /// Resets every offline transport.
    fn reconnect_offline(&self) -> BoxFuture<Result<(), String>>;
    /// Has the adb server exit, for its supervisor to start it again.
    fn restart_server(&self) -> BoxFuture<Result<(), String>>;
    /// Whether the adb server answers a request (`host:version`) within its deadline;
    /// asked only in a round where no phone's requests showed it.
    fn probe_server(&self) -> BoxFuture<Result<(), String>>;
    /// Has the supervisor of our adb server kill it (SIGKILL) and start it again: for a
    /// server that accepts connections and answers none, which `host:kill` cannot stop.
    fn kill_server(&self, why: String);
}

/// What the watcher needs of the iPhones (libimobiledevice's tools, for real).
pub trait IosPhones: Send + Sync {
    /// Lists the iPhones and reads each one.
    fn interrogate(&self) -> BoxFuture<Result<Vec<Device>, ios::IosError>>;
    /// Restarts one and waits until it is listed again, within `deadline`.
    fn reboot(&self, udid: &str, deadline: Duration) -> BoxFuture<Result<(), String>>;
}

/// When rounds start.
pub trait Clock: Send {
    fn tick(&mut self) -> impl Future<Output = ()> + Send;
}

impl Clock for Ticker {
    async fn tick(&mut self) {
        Ticker::tick(self).await
    }
}

/// libimobiledevice's tools, run under the reaper.
pub struct IosTools {
    pub tools: ios::Tools,
    pub metrics: Arc<Metrics>,
    pub reaper: Reaper,
}

impl IosPhones for IosTools {
    fn interrogate(&self) -> BoxFuture<Result<Vec<Device>, ios::IosError>> {
        let (tools, metrics, reaper) = (
            self.tools.clone(),
            self.metrics.clone(),
            self.reaper.clone(),
        );
        Box::pin(async move { ios::interrogate(&tools, &reaper, &metrics).await })
    }

    fn reboot(&self, udid: &str, deadline: Duration) -> BoxFuture<Result<(), String>> {
        let (tools, metrics, reaper, udid) = (
            self.tools.clone(),
            self.metrics.clone(),
            self.reaper.clone(),
            udid.to_string(),
        );
        Box::pin(async move {
            ios::reboot(&tools, &reaper, &udid, deadline)
                .await
                .map_err(|e| {
                    metrics.interrogation_errors_total.inc(e.metric_kind());
                    e.to_string()
                })
        })
    }
}
