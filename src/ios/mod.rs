//! iPhones, read through libimobiledevice's command-line tools (`--devices ios`).
//!
//! A self-contained source of iOS [`Device`]s that the device watcher calls once per
//! round ([`interrogate`]) and after a task ([`reboot`]); the watcher owns the health
//! memory and the snapshot, and feeds these devices to `health::assess` together with
//! the Android ones, so the battery and gone-missing rules are the same for both kinds.
//!
//! A round: `idevice_id -l` lists the UDIDs; then, for every phone at once,
//! `ideviceinfo -u <udid> -k ProductType`, `-k ProductVersion` and
//! `-q com.apple.mobile.battery -k BatteryCurrentCapacity`, each under a deadline
//! ([`tool_deadline`]) and killed with its process group when it passes. The tools live
//! in `--idevice-dir`. Partial success is the policy: the type and the version decide
//! the dimensions, so a phone that cannot give them is listed as unusable with the
//! reason; the battery is best effort (unknown rather than unusable).
//!
//! Dimensions: per phone `os: ["iOS", "iOS-<version>"]` and `device_type:
//! [<ProductType>]` ([`ios_device`]); for the bot, their union plus `ios_devices`
//! ([`ios_fleet`]), ready for `dimensions::merge` with Android's.
//!
//! Must not: decide health, publish snapshots, or wait on a child other than through the
//! [`Reaper`].

mod parse;
mod run;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::config::Config;
use crate::dimensions;
use crate::metrics::Metrics;
use crate::parse::ParseError;
use crate::reaper::{Exit, Reaper};
use crate::snapshot::{Device, DeviceKind, Dimensions};
use run::RunError;

/// The longest any one tool may take, whatever the interval.
const MAX_TOOL_DEADLINE: Duration = Duration::from_secs(5);
/// How often a restarting phone's return is checked.
const REBOOT_POLL: Duration = Duration::from_secs(1);

const IDEVICE_ID: &str = "idevice_id";
const IDEVICEINFO: &str = "ideviceinfo";
const IDEVICEDIAGNOSTICS: &str = "idevicediagnostics";

/// The deadline of one tool run. A round is the listing then the phones' queries in
/// parallel, two deadlines in a row, which must end well within `--interrogate-every`.
pub fn tool_deadline(interval: Duration) -> Duration {
    interval.mul_f64(0.375).min(MAX_TOOL_DEADLINE)
}

/// Which step of the work failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `idevice_id -l`.
    List,
    /// `ideviceinfo -k ProductType`.
    ProductType,
    /// `ideviceinfo -k ProductVersion`.
    ProductVersion,
    /// `ideviceinfo -q com.apple.mobile.battery -k BatteryCurrentCapacity`.
    Battery,
    /// `idevicediagnostics restart`.
    Restart,
    /// Waiting for a restarted phone to be listed again.
    Return,
}

impl Step {
    fn tool(self) -> &'static str {
        match self {
            Step::List | Step::Return => IDEVICE_ID,
            Step::ProductType | Step::ProductVersion | Step::Battery => IDEVICEINFO,
            Step::Restart => IDEVICEDIAGNOSTICS,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Step::List => "idevice_id -l",
            Step::ProductType => "ideviceinfo -k ProductType",
            Step::ProductVersion => "ideviceinfo -k ProductVersion",
            Step::Battery => "ideviceinfo -k BatteryCurrentCapacity",
            Step::Restart => "idevicediagnostics restart",
            Step::Return => "waiting for the phone to return after its restart",
        }
    }
}

/// What went wrong, for callers to branch on.
#[derive(Debug, Clone, PartialEq)]
pub enum IosErrorKind {
    /// The tool is not at `path`.
    ToolMissing { path: PathBuf },
    /// The tool is there but could not be run or read.
    Io { path: PathBuf, reason: String },
    /// The tool did not finish in time; it was killed with its process group.
    Timeout { after: Duration },
    /// The tool ended with a failure; `message` is the first line it printed about it.
    Failed { exit: Exit, message: String },
    /// The tool succeeded but printed something unexpected.
    Parse(ParseError),
    /// A restarted phone was not listed again within the deadline. `disappeared` says
    /// whether it left the list at all (if not, the restart probably did not happen).
    NotBack { after: Duration, disappeared: bool },
}

/// An error of one step, for one phone (`udid`) or for the listing (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct IosError {
    pub step: Step,
    pub udid: Option<String>,
    pub kind: IosErrorKind,
}

impl IosError {
    /// The `kind` label of `interrogation_errors_total`.
    pub fn metric_kind(&self) -> &'static str {
        match self.kind {
            IosErrorKind::Timeout { .. } | IosErrorKind::NotBack { .. } => "timeout",
            IosErrorKind::Parse(_) => "parse",
            _ => "ios_tool",
        }
    }

    fn new(step: Step, udid: Option<&str>, kind: IosErrorKind) -> IosError {
        IosError {
            step,
            udid: udid.map(str::to_string),
            kind,
        }
    }
}

impl fmt::Display for IosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(udid) = &self.udid {
            write!(f, "iPhone {udid}: ")?;
        }
        write!(f, "{}: ", self.step.describe())?;
        match &self.kind {
            IosErrorKind::ToolMissing { path } => write!(
                f,
                "{} not found at {} (install libimobiledevice-utils, or point --idevice-dir at the directory that holds it)",
                self.step.tool(),
                path.display()
            ),
            IosErrorKind::Io { path, reason } => write!(f, "cannot run {}: {reason}", path.display()),
            IosErrorKind::Timeout { after } => write!(
                f,
                "no answer within {}; killed it with its process group",
                secs(*after)
            ),
            IosErrorKind::Failed { exit, message } => {
                let message = if message.is_empty() { "(printed nothing)" } else { message };
                write!(f, "failed with {exit}: {message}")?;
                if self.step == Step::List {
                    write!(f, " (is usbmuxd running on the host or in the pod?)")?;
                }
                Ok(())
            }
            IosErrorKind::Parse(e) => write!(f, "unexpected output: {e}"),
            IosErrorKind::NotBack { after, disappeared } => {
                write!(f, "not listed again within {}", secs(*after))?;
                if !disappeared {
                    write!(f, " (it never left the list: did it restart?)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for IosError {}

fn secs(d: Duration) -> String {
    format!("{}s", (d.as_secs_f64() * 10.0).round() / 10.0)
}

/// Runs one step's tool from `dir` and turns its failures into an [`IosError`].
async fn tool(
    reaper: &Reaper,
    dir: &Path,
    step: Step,
    udid: Option<&str>,
    args: &[&str],
    deadline: Duration,
) -> Result<String, IosError> {
    let path = dir.join(step.tool());
    let kind = match run::run(reaper, &path, args, deadline).await {
        Ok(out) => return Ok(out.stdout),
        Err(RunError::Missing) => IosErrorKind::ToolMissing { path },
        Err(RunError::Io(reason)) => IosErrorKind::Io { path, reason },
        Err(RunError::Timeout(after)) => IosErrorKind::Timeout { after },
        Err(RunError::Failed { exit, message }) => IosErrorKind::Failed { exit, message },
    };
    Err(IosError::new(step, udid, kind))
}

/// The UDIDs `idevice_id -l` lists now.
async fn list(reaper: &Reaper, dir: &Path, deadline: Duration) -> Result<Vec<String>, IosError> {
    let out = tool(reaper, dir, Step::List, None, &["-l"], deadline).await?;
    parse::device_list(&out).map_err(|e| IosError::new(Step::List, None, IosErrorKind::Parse(e)))
}

/// One `ideviceinfo` value of one phone.
async fn info(
    reaper: &Reaper,
    dir: &Path,
    udid: &str,
    step: Step,
    deadline: Duration,
) -> Result<String, IosError> {
    let args: &[&str] = match step {
        Step::ProductType => &["-u", udid, "-k", "ProductType"],
        Step::ProductVersion => &["-u", udid, "-k", "ProductVersion"],
        _ => &[
            "-u",
            udid,
            "-q",
            "com.apple.mobile.battery",
            "-k",
            "BatteryCurrentCapacity",
        ],
    };
    tool(reaper, dir, step, Some(udid), args, deadline).await
}

/// Lists the iPhones and reads each of them, all phones at once. Every phone listed is
/// returned, usable or with its `unusable` reason; each failure is counted in
/// `interrogation_errors_total`. An `Err` means the list itself could not be had (the
/// tool is missing, usbmuxd is not running...): the caller should report it rather
/// than take it for "no phone".
pub async fn interrogate(
    config: &Config,
    reaper: &Reaper,
    metrics: &Metrics,
) -> Result<Vec<Device>, IosError> {
    let dir = config.idevice_dir.as_path();
    let deadline = tool_deadline(config.interrogate_every);
    let udids = list(reaper, dir, deadline).await.inspect_err(|e| {
        metrics.interrogation_errors_total.inc(&[e.metric_kind()]);
    })?;
    let phones = udids.iter().map(|udid| async move {
        let (product_type, version, battery) = tokio::join!(
            info(reaper, dir, udid, Step::ProductType, deadline),
            info(reaper, dir, udid, Step::ProductVersion, deadline),
            info(reaper, dir, udid, Step::Battery, deadline),
        );
        let product_type = product_type
            .and_then(|out| parsed(Step::ProductType, udid, parse::value("ProductType", &out)));
        let version = version.and_then(|out| {
            parsed(
                Step::ProductVersion,
                udid,
                parse::value("ProductVersion", &out),
            )
        });
        let battery =
            battery.and_then(|out| parsed(Step::Battery, udid, parse::battery_percent(&out)));
        for e in [
            product_type.as_ref().err(),
            version.as_ref().err(),
            battery.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        {
            metrics.interrogation_errors_total.inc(&[e.metric_kind()]);
            log::debug!("{e}");
        }
        build_device(udid, product_type, version, battery.ok())
    });
    Ok(join_all(phones.collect()).await)
}

fn parsed<T>(step: Step, udid: &str, r: Result<T, ParseError>) -> Result<T, IosError> {
    r.map_err(|e| IosError::new(step, Some(udid), IosErrorKind::Parse(e)))
}

/// One phone as the snapshot shows it, from what its tools gave.
fn build_device(
    udid: &str,
    product_type: Result<String, IosError>,
    version: Result<String, IosError>,
    battery: Option<u8>,
) -> Device {
    let mut d = Device::listed(DeviceKind::Ios, udid, "device");
    // An iPhone that the tools can reach has finished booting; there is no other signal.
    d.boot_completed = true;
    d.battery_percent = battery.map(f64::from);
    d.device_type = product_type.as_ref().ok().cloned();
    d.build = version.as_ref().ok().cloned();
    match (product_type, version) {
        (Ok(product_type), Ok(version)) => d.dimensions = ios_device(&product_type, &version),
        (Err(e), _) | (_, Err(e)) => d.unusable = Some(e.to_string()),
    }
    d
}

/// One phone's dimensions.
pub fn ios_device(product_type: &str, version: &str) -> Dimensions {
    let mut d = Dimensions::new();
    d.insert(
        "os".to_string(),
        vec!["iOS".to_string(), format!("iOS-{}", version.trim())],
    );
    d.insert("device_type".to_string(), vec![product_type.to_string()]);
    dimensions::merge(&[&d])
}

/// The bot's iOS dimensions from the phones the caller counts as usable: the union of
/// their own dimensions plus `ios_devices: [<count>]`; an empty map when there are none.
pub fn ios_fleet(usable: &[&Device]) -> Dimensions {
    if usable.is_empty() {
        return Dimensions::new();
    }
    let mut fleet = dimensions::merge(&usable.iter().map(|d| &d.dimensions).collect::<Vec<_>>());
    fleet.insert("ios_devices".to_string(), vec![usable.len().to_string()]);
    fleet
}

/// Restarts a phone (`idevicediagnostics -u <udid> restart`), then waits until
/// `idevice_id -l` has stopped listing it and lists it again, polling every second,
/// for at most `deadline` in all.
pub async fn reboot(
    config: &Config,
    reaper: &Reaper,
    udid: &str,
    deadline: Duration,
) -> Result<(), IosError> {
    let dir = config.idevice_dir.as_path();
    let until = tokio::time::Instant::now() + deadline;
    let step_deadline = tool_deadline(config.interrogate_every).min(deadline);
    tool(
        reaper,
        dir,
        Step::Restart,
        Some(udid),
        &["-u", udid, "restart"],
        step_deadline,
    )
    .await?;
    log::info!("iPhone {udid} is restarting");
    // Returning as soon as the phone is listed could catch it before it has left: only
    // a phone that was seen gone and then listed again is back.
    let mut disappeared = false;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(IosError::new(
                Step::Return,
                Some(udid),
                IosErrorKind::NotBack {
                    after: deadline,
                    disappeared,
                },
            ));
        }
        match list(reaper, dir, step_deadline.min(left)).await {
            Ok(udids) if udids.iter().any(|u| u == udid) => {
                if disappeared {
                    log::info!("iPhone {udid} is back after its restart");
                    return Ok(());
                }
            }
            Ok(_) => disappeared = true,
            // Nothing else will make the tool appear while we wait.
            Err(
                e @ IosError {
                    kind: IosErrorKind::ToolMissing { .. },
                    ..
                },
            ) => return Err(e),
            // usbmuxd may stumble while the phone re-enumerates: ask again.
            Err(e) => log::debug!("{e}"),
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(REBOOT_POLL.min(left)).await;
    }
}

/// Polls every future until all are done; the outputs keep the input order. Dropping
/// the returned future drops every unfinished one (their tools get killed).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
