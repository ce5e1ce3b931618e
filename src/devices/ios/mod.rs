//! iPhones, read through libimobiledevice's command-line tools (`--devices ios`).
//!
//! A self-contained source of iOS [`Device`]s that the device watcher calls once per
//! round ([`interrogate`]) and after a task ([`reboot`]); the watcher owns the health
//! memory and the snapshot, and feeds these devices to `verdict::decide` together with
//! the Android ones, so the battery and gone-missing rules are the same for both kinds.
//!
//! A round: `idevice_id -l` lists the UDIDs; then, for every phone at once,
//! `ideviceinfo -u <udid> -k ProductType`, `-k ProductVersion` and
//! `-q com.apple.mobile.battery -k BatteryCurrentCapacity`, each under a deadline
//! (`devices::budget`) and killed with its process group when it passes. The tools live
//! in `--idevice-dir`. Partial success is the policy: the type and the version decide
//! the dimensions, so a phone that cannot give them is listed as unusable with the
//! reason; the battery is best effort (unknown rather than unusable).
//!
//! Dimensions: per phone `os: ["iOS", "iOS-<version>"]` and `device_type:
//! [<ProductType>]` ([`ios_device`]); for the bot, their union plus `ios_devices`
//! ([`ios_dimensions`]), ready for `dimensions::merge` with Android's.
//!
//! Between rounds the watcher keeps the iPhones in an [`Iphones`] (`watch`), which
//! keeps the last known phones when a listing fails instead of taking it for "no phone".
//!
//! Must not: decide health, publish snapshots, or wait on a child other than through the
//! [`Reaper`].

pub(crate) mod parse;
mod run;
pub mod usbmuxd;
mod watch;

/// The stand-in tools, shared with the integration tests.
#[cfg(test)]
#[path = "../../../tests/support/ios.rs"]
mod test_lab;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::devices::budget::Budget;
use crate::devices::dimensions;
use crate::devices::parse::ParseError;
use crate::runtime::reaper::{Exit, Reaper};
use crate::state::metrics::{InterrogationErrorKind, Metrics};
use crate::state::snapshot::{Device, DeviceKind, Dimensions, Fault, Link};
use run::RunError;
pub use watch::Iphones;

/// How often a restarting phone's return is checked.
const REBOOT_POLL: Duration = Duration::from_secs(1);

const IDEVICE_ID: &str = "idevice_id";
const IDEVICEINFO: &str = "ideviceinfo";
const IDEVICEDIAGNOSTICS: &str = "idevicediagnostics";

/// The deadline of one tool run (see `devices::budget`).
fn tool_deadline(interval: Duration) -> Duration {
    Budget::of(interval).ios_tool
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
    pub fn metric_kind(&self) -> InterrogationErrorKind {
        match self.kind {
            IosErrorKind::Timeout { .. } | IosErrorKind::NotBack { .. } => {
                InterrogationErrorKind::Timeout
            }
            IosErrorKind::Parse(_) => InterrogationErrorKind::Parse,
            _ => InterrogationErrorKind::IosTool,
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

/// Where the tools are (`--idevice-dir`) and the round's period their deadlines come
/// from (`--interrogate-every`): all of the configuration the iPhones' side reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub dir: std::path::PathBuf,
    pub interrogate_every: Duration,
}

/// Lists the iPhones and reads each of them, all phones at once. Every phone listed is
/// returned, usable or with its [`Fault`]; each failure is counted in
/// `interrogation_errors_total`. An `Err` means the list itself could not be had (the
/// tool is missing, usbmuxd is not running...): the caller should report it rather
/// than take it for "no phone".
pub async fn interrogate(
    tools: &Tools,
    reaper: &Reaper,
    metrics: &Metrics,
) -> Result<Vec<Device>, IosError> {
    let dir = tools.dir.as_path();
    let deadline = tool_deadline(tools.interrogate_every);
    let udids = list(reaper, dir, deadline).await.inspect_err(|e| {
        metrics.interrogation_errors_total.inc(e.metric_kind());
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
            metrics.interrogation_errors_total.inc(e.metric_kind());
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
    let mut d = Device::listed(DeviceKind::Ios, udid, Link::Device);
    d.battery_percent = battery.map(f64::from);
    d.device_type = product_type.as_ref().ok().cloned();
    d.model.clone_from(&d.device_type);
    d.build = version.as_ref().ok().cloned();
    match (product_type, version) {
        (Ok(product_type), Ok(version)) => {
            d.dimensions = ios_device(&product_type, &version);
            d.fault = None;
        }
        (Err(e), _) | (_, Err(e)) => {
            d.fault = Some(Fault::NotAnswering {
                why: e.to_string(),
                offline: false,
            })
        }
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
pub fn ios_dimensions(usable: &[&Device]) -> Dimensions {
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
    tools: &Tools,
    reaper: &Reaper,
    udid: &str,
    deadline: Duration,
) -> Result<(), IosError> {
    let dir = tools.dir.as_path();
    let until = tokio::time::Instant::now() + deadline;
    let step_deadline = tool_deadline(tools.interrogate_every).min(deadline);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::verdict::Round;
    use crate::state::snapshot::{usable_device, Reasons, State};
    use std::collections::BTreeMap;

    use test_lab::{dead, Lab};

    const A: &str = "00008030-001A2D3E0E38802E";
    const B: &str = "00008101-000C19A82E10001E";
    const C: &str = "abcdef0123456789abcdef0123456789abcdef01";

    fn config_for(dir: &Path, interval_secs: u64) -> Tools {
        Tools {
            dir: dir.to_path_buf(),
            interrogate_every: Duration::from_secs(interval_secs),
        }
    }

    /// Runs a test that spawns the stand-ins with the reap loop, one at a time.
    fn with_tools<F, Fut>(test: F)
    where
        F: FnOnce(Reaper) -> Fut,
        Fut: Future<Output = ()>,
    {
        crate::runtime::reaper::with_reap_loop(test)
    }

    fn errors(metrics: &Metrics) -> Vec<(Vec<String>, u64)> {
        metrics.interrogation_errors_total.series()
    }

    fn by_serial<'a>(devices: &'a [Device], udid: &str) -> &'a Device {
        devices.iter().find(|d| d.serial == udid).unwrap()
    }

    fn dims(pairs: &[(&str, &[&str])]) -> Dimensions {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    async fn all_dead(pids: &[i32]) -> bool {
        for _ in 0..100 {
            if pids.iter().all(|p| dead(*p)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[test]
    fn several_phones_are_read() {
        with_tools(|reaper| async move {
            let lab = Lab::new("several");
            lab.phones(&[C, A, B]);
            lab.phone(A, "iPhone14,2", "17.1", "87");
            lab.phone(B, "iPhone13,1", "16.6.1", "100");
            lab.phone(C, "iPhone10,4", "15.7", "55");
            let metrics = Metrics::default();
            let devices = interrogate(&config_for(&lab.dir, 30), &reaper, &metrics)
                .await
                .unwrap();

            assert_eq!(
                devices
                    .iter()
                    .map(|d| d.serial.as_str())
                    .collect::<Vec<_>>(),
                vec![A, B, C]
            );
            let a = by_serial(&devices, A);
            assert_eq!(
                a,
                &Device {
                    kind: DeviceKind::Ios,
                    serial: A.into(),
                    state: State::Listed(Link::Device),
                    device_type: Some("iPhone14,2".into()),
                    model: Some("iPhone14,2".into()),
                    usb_path: None,
                    read_at_unix: None,
                    battery_percent: Some(87.0),
                    powered: None,
                    battery_health: None,
                    data_free_bytes: None,
                    temperatures: vec![],
                    uptime_secs: None,
                    booting: false,
                    build: Some("17.1".into()),
                    dimensions: dims(&[
                        ("device_type", &["iPhone14,2"]),
                        ("os", &["iOS", "iOS-17.1"])
                    ]),
                    fault: None,
                    missing_values: vec![],
                    verdict_for_secs: 0.0,
                    recovery_step: 0,
                    reasons: Reasons::default(),
                }
            );
            assert!(devices.iter().all(|d| d.unusable().is_none()));
            assert!(errors(&metrics).is_empty());

            let usable: Vec<&Device> = devices.iter().collect();
            assert_eq!(
                ios_dimensions(&usable),
                dims(&[
                    ("device_type", &["iPhone10,4", "iPhone13,1", "iPhone14,2"]),
                    ("ios_devices", &["3"]),
                    ("os", &["iOS", "iOS-15.7", "iOS-16.6.1", "iOS-17.1"]),
                ])
            );
            let assessment = Round::of(&devices).decide();
            assert_eq!(assessment.reasons, Default::default());
        });
    }

    #[test]
    fn a_phone_gone_missing_is_quarantined() {
        with_tools(|reaper| async move {
            let lab = Lab::new("missing");
            lab.phones(&[A, B]);
            lab.phone(A, "iPhone14,2", "17.1", "87");
            lab.phone(B, "iPhone13,1", "16.6.1", "90");
            let metrics = Metrics::default();
            let first = interrogate(&config_for(&lab.dir, 30), &reaper, &metrics)
                .await
                .unwrap();
            let first = Round::of(&first).decide();
            assert!(first.reasons.quarantined.is_empty());

            lab.phones(&[A]);
            let second = interrogate(&config_for(&lab.dir, 30), &reaper, &metrics)
                .await
                .unwrap();
            assert_eq!(second.len(), 1);
            let second = Round::of(&second).after(&first.memory).decide();
            assert_eq!(
                second.reasons.quarantined,
                vec![format!("device {B} (iPhone13,1) has gone missing")]
            );
            let missing: Vec<&Device> = second
                .devices
                .iter()
                .filter(|d| d.state == State::Missing)
                .collect();
            assert_eq!(missing.len(), 1);
            assert_eq!(missing[0].kind, DeviceKind::Ios);
            assert_eq!(missing[0].serial, B);
        });
    }

    #[test]
    fn a_low_battery_means_maintenance_and_an_unknown_one_does_not_matter() {
        with_tools(|reaper| async move {
            let lab = Lab::new("battery");
            lab.phones(&[A, B]);
            lab.phone(A, "iPhone14,2", "17.1", "12");
            lab.phone(B, "iPhone13,1", "16.6.1", "");
            let metrics = Metrics::default();
            let devices = interrogate(&config_for(&lab.dir, 30), &reaper, &metrics)
                .await
                .unwrap();
            let b = by_serial(&devices, B);
            assert_eq!(b.battery_percent, None);
            assert_eq!(b.unusable(), None, "the battery is best effort");
            assert_eq!(errors(&metrics), vec![(vec!["parse".to_string()], 1)]);
            let a = Round::of(&devices).decide();
            assert_eq!(
                a.reasons.maintenance,
                vec![format!("battery low: {A} 12% (< 30%)")]
            );
        });
    }

    #[test]
    fn a_hung_phone_is_killed_with_its_children_and_the_others_are_read() {
        with_tools(|reaper| async move {
            let lab = Lab::new("hang");
            lab.phones(&[A, B]);
            lab.phone(A, "iPhone14,2", "17.1", "87");
            lab.phone(B, "iPhone13,1", "16.6.1", "90");
            lab.mark(A, "hang");
            let metrics = Metrics::default();
            let config = config_for(&lab.dir, 8);
            let round = tokio::time::timeout(
                Duration::from_secs(60),
                interrogate(&config, &reaper, &metrics),
            );
            let devices = round.await.expect("the deadline was not applied").unwrap();

            let a = by_serial(&devices, A);
            assert_eq!(
                a.unusable().as_deref(),
                Some(format!(
                    "not answering: iPhone {A}: ideviceinfo -k ProductType: no answer within 3s; killed it with its process group"
                ))
                .as_deref()
            );
            assert_eq!(a.state_word(), "device");
            assert!(a.dimensions.is_empty());
            let b = by_serial(&devices, B);
            assert_eq!(b.unusable(), None);
            assert_eq!(b.battery_percent, Some(90.0));
            assert_eq!(errors(&metrics), vec![(vec!["timeout".to_string()], 3)]);

            let sleepers = lab.sleepers();
            assert!(!sleepers.is_empty());
            assert!(all_dead(&sleepers).await, "still running: {sleepers:?}");
        });
    }

    #[test]
    fn dropping_a_round_kills_its_tools() {
        with_tools(|reaper| async move {
            let lab = Lab::new("drop");
            lab.phones(&[A]);
            lab.phone(A, "iPhone14,2", "17.1", "87");
            lab.mark(A, "hang");
            let metrics = Metrics::default();
            let config = config_for(&lab.dir, 30);
            let three_sleepers = async {
                while lab.sleepers().len() < 3 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = interrogate(&config, &reaper, &metrics) => panic!("the round should hang"),
                _ = tokio::time::timeout(Duration::from_secs(30), three_sleepers) => {}
            }
            let sleepers = lab.sleepers();
            assert_eq!(sleepers.len(), 3);
            assert!(all_dead(&sleepers).await, "still running: {sleepers:?}");
        });
    }

    #[test]
    fn a_failing_tool_gives_its_own_message_and_the_phone_stays_listed() {
        with_tools(|reaper| async move {
            let lab = Lab::new("locked");
            lab.phones(&[A, B]);
            lab.phone(A, "iPhone14,2", "17.1", "87");
            lab.phone(B, "iPhone13,1", "16.6.1", "90");
            lab.mark(A, "locked");
            // Unplugged between the listing and the query: the tool says so on stdout.
            lab.mark(B, "gone");
            let metrics = Metrics::default();
            let devices = interrogate(&config_for(&lab.dir, 30), &reaper, &metrics)
                .await
                .unwrap();
            assert_eq!(devices.len(), 2);
            assert_eq!(
                by_serial(&devices, A).unusable().as_deref(),
                Some(format!(
                    "not answering: iPhone {A}: ideviceinfo -k ProductType: failed with exit code 255: ERROR: Could not connect to lockdownd: Password protected (-17)"
                ))
                .as_deref()
            );
            assert_eq!(
                by_serial(&devices, B).unusable().as_deref(),
                Some(format!(
                    "not answering: iPhone {B}: ideviceinfo -k ProductType: failed with exit code 255: ERROR: Device {B} not found!"
                ))
                .as_deref()
            );
            assert_eq!(errors(&metrics), vec![(vec!["ios_tool".to_string()], 6)]);
        });
    }

    #[test]
    fn usbmuxd_down_is_an_error_not_an_empty_list() {
        with_tools(|reaper| async move {
            let lab = Lab::new("usbmuxd");
            lab.phones(&[A]);
            lab.write("usbmuxd-down", "");
            let metrics = Metrics::default();
            let e = interrogate(&config_for(&lab.dir, 30), &reaper, &metrics)
                .await
                .unwrap_err();
            assert_eq!(e.step, Step::List);
            assert_eq!(e.udid, None);
            assert_eq!(
                e.kind,
                IosErrorKind::Failed {
                    exit: Exit::Code(255),
                    message: "ERROR: Unable to retrieve device list!".into()
                }
            );
            assert_eq!(
                e.to_string(),
                "idevice_id -l: failed with exit code 255: ERROR: Unable to retrieve device list! (is usbmuxd running on the host or in the pod?)"
            );
            assert_eq!(errors(&metrics), vec![(vec!["ios_tool".to_string()], 1)]);
        });
    }

    #[test]
    fn missing_tools_name_their_path_and_the_flag() {
        with_tools(|reaper| async move {
            let lab = Lab::new("notools");
            let empty = lab.dir.join("empty");
            std::fs::create_dir(&empty).unwrap();
            let metrics = Metrics::default();
            let e = interrogate(&config_for(&empty, 30), &reaper, &metrics)
                .await
                .unwrap_err();
            assert_eq!(
                e.kind,
                IosErrorKind::ToolMissing {
                    path: empty.join("idevice_id")
                }
            );
            assert_eq!(
                e.to_string(),
                format!(
                    "idevice_id -l: idevice_id not found at {}/idevice_id (install libimobiledevice-utils, or point --idevice-dir at the directory that holds it)",
                    empty.display()
                )
            );

            // The listing works but ideviceinfo is gone: the phone says why it is unusable.
            lab.phones(&[A]);
            std::fs::remove_file(lab.dir.join("ideviceinfo")).unwrap();
            let devices = interrogate(&config_for(&lab.dir, 30), &reaper, &metrics)
                .await
                .unwrap();
            let reason = devices[0].unusable().unwrap();
            assert!(reason.contains("ideviceinfo not found at"), "{reason}");
            assert!(reason.contains("--idevice-dir"), "{reason}");
        });
    }

    #[test]
    fn reboot_waits_for_the_phone_to_leave_and_come_back() {
        with_tools(|reaper| async move {
            let lab = Lab::new("reboot");
            lab.phones(&[A, B]);
            lab.phone(A, "iPhone14,2", "17.1", "87");
            let config = config_for(&lab.dir, 30);
            reboot(&config, &reaper, A, Duration::from_secs(60))
                .await
                .unwrap();
            assert!(
                !lab.dir.join(format!("{A}.away")).exists(),
                "it was not seen coming back"
            );
            let devices = interrogate(&config, &reaper, &Metrics::default())
                .await
                .unwrap();
            assert_eq!(by_serial(&devices, A).unusable(), None);
        });
    }

    #[test]
    fn reboot_errors() {
        with_tools(|reaper| async move {
            let lab = Lab::new("reboot-errors");
            lab.phones(&[A, B]);
            let config = config_for(&lab.dir, 8);

            lab.mark(A, "stays");
            let e = reboot(&config, &reaper, A, Duration::from_secs(3))
                .await
                .unwrap_err();
            assert_eq!(
                e.kind,
                IosErrorKind::NotBack {
                    after: Duration::from_secs(3),
                    disappeared: false
                }
            );
            assert_eq!(
                e.to_string(),
                format!("iPhone {A}: waiting for the phone to return after its restart: not listed again within 3s (it never left the list: did it restart?)")
            );
            assert_eq!(e.metric_kind().as_str(), "timeout");

            // Restarted (it leaves the list) but never back.
            lab.mark(B, "stays");
            // Away until long after the test.
            lab.write(&format!("{B}.away"), "99999999999999");
            let e = reboot(&config, &reaper, B, Duration::from_secs(3))
                .await
                .unwrap_err();
            assert_eq!(
                e.kind,
                IosErrorKind::NotBack {
                    after: Duration::from_secs(3),
                    disappeared: true
                }
            );

            let e = reboot(&config, &reaper, C, Duration::from_secs(3))
                .await
                .unwrap_err();
            assert_eq!(e.step, Step::Restart);
            assert_eq!(
                e.to_string(),
                format!("iPhone {C}: idevicediagnostics restart: failed with exit code 1: ERROR: Device {C} not found!")
            );
        });
    }

    #[test]
    fn per_phone_dimensions() {
        assert_eq!(
            ios_device("iPhone14,2", "17.1"),
            dims(&[
                ("device_type", &["iPhone14,2"]),
                ("os", &["iOS", "iOS-17.1"])
            ])
        );
    }

    #[test]
    fn dimensions_of_none_is_empty_and_counts_phones() {
        assert_eq!(ios_dimensions(&[]), Dimensions::new());
        let mut one = usable_device(DeviceKind::Ios, A);
        one.dimensions = ios_device("iPhone14,2", "17.1");
        let mut two = usable_device(DeviceKind::Ios, B);
        two.dimensions = ios_device("iPhone14,2", "17.1");
        assert_eq!(
            ios_dimensions(&[&one, &two]),
            dims(&[
                ("device_type", &["iPhone14,2"]),
                ("ios_devices", &["2"]),
                ("os", &["iOS", "iOS-17.1"]),
            ])
        );
    }

    #[test]
    fn dimensions_merges_with_android() {
        let props: BTreeMap<String, String> = [
            ("ro.product.device", "husky"),
            ("ro.build.id", "UQ1A.240205.004"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let android = dimensions::android_dimensions(&[&dimensions::android_device(
            &props,
            &crate::devices::dimensions::Packages::new(),
        )]);
        let mut phone = usable_device(DeviceKind::Ios, A);
        phone.dimensions = ios_device("iPhone14,2", "17.1");
        let ios = ios_dimensions(&[&phone]);
        let both = dimensions::merge(&[&android, &ios]);
        assert_eq!(both["os"], vec!["Android", "iOS", "iOS-17.1"]);
        assert_eq!(both["device_type"], vec!["husky", "iPhone14,2"]);
        assert_eq!(both["ios_devices"], vec!["1"]);
        assert_eq!(both["android_devices"], vec!["1"]);
    }

    #[test]
    fn a_phone_without_its_version_is_unusable_but_keeps_its_type() {
        let e = IosError::new(
            Step::ProductVersion,
            Some(A),
            IosErrorKind::Timeout {
                after: Duration::from_millis(2500),
            },
        );
        let d = build_device(A, Ok("iPhone14,2".into()), Err(e), Some(50));
        assert_eq!(d.device_type.as_deref(), Some("iPhone14,2"));
        assert_eq!(d.build, None);
        assert!(d.dimensions.is_empty());
        assert_eq!(d.battery_percent, Some(50.0));
        assert_eq!(
            d.unusable().as_deref(),
            Some(format!("not answering: iPhone {A}: ideviceinfo -k ProductVersion: no answer within 2.5s; killed it with its process group").as_str())
        );
    }

    #[test]
    fn metric_kinds() {
        let e = |kind| IosError::new(Step::List, None, kind);
        assert_eq!(
            e(IosErrorKind::Timeout {
                after: Duration::ZERO
            })
            .metric_kind()
            .as_str(),
            "timeout"
        );
        assert_eq!(
            e(IosErrorKind::Parse(crate::devices::parse::ParseError::new(
                "x", "y"
            )))
            .metric_kind()
            .as_str(),
            "parse"
        );
        assert_eq!(
            e(IosErrorKind::ToolMissing { path: "/x".into() })
                .metric_kind()
                .as_str(),
            "ios_tool"
        );
        assert_eq!(
            e(IosErrorKind::Failed { exit: Exit::Signal(9), message: String::new() }).to_string(),
            "idevice_id -l: failed with signal 9 (SIGKILL): (printed nothing) (is usbmuxd running on the host or in the pod?)"
        );
    }
}
