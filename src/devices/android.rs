//! The Android side of the watcher, for real: the adb server's device list, one round
//! per phone as one shell script (on the phone's kept-open shell, `kept_shells`; on a
//! connection of its own for phones without shell v2), reboots after a task, and the
//! reconnects the verdict asks for; and the pure step from a listing and a round to a
//! [`Device`].
//!
//! Each phone's commands run as one script (`parse::batch`): a Pi pays per wake-up, and
//! five requests cost five connections, transport switches and phone-side shells where
//! one does. Every failure is counted in `interrogation_errors_total` here, at the edge;
//! the watcher only sees what each phone said.
//!
//! Must not: parse output (`parse`), fill a round from what the phone said (`reading`),
//! decide a phone's fate (`verdict`), or compute dimensions (`dimensions`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::phones::{AndroidPhones, BoxFuture, PhoneRound};
use crate::devices::adb::client::{self, Client, End, ShellProtocol, MAX_OUTPUT};
use crate::devices::adb::network::{NetworkPhones, Why};
use crate::devices::dimensions;
use crate::devices::kept_shells::Shells;
use crate::devices::parse::{self, battery::Battery, devices_l::Listed};
use crate::devices::reading::{self, Alone, Script, ScriptRefusals, ROUND_COMMANDS};
use crate::runtime::retry::Retry;
use crate::runtime::shutdown::Shutdown;
use crate::state::metrics::InterrogationErrorKind;
use crate::state::metrics::Metrics;
use crate::state::snapshot::{Device, DeviceKind, Fault, Link, Temperature};
use std::net::SocketAddr;

/// How often to ask a rebooting phone whether it has finished booting.
const BOOT_POLL: Duration = Duration::from_secs(2);
/// Delays between attempts to follow the device list while the server is away.
const TRACK_RETRY_MIN: Duration = Duration::from_millis(200);
const TRACK_RETRY_MAX: Duration = Duration::from_secs(2);

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

/// `listed`, with a fresh `offline` shown as `connecting`: every new transport is
/// `offline` until its handshake ends, usually for milliseconds but for seconds on a
/// busy host or during an auth exchange, so only a phone offline for `settle` (see
/// `Budget::offline_settle`) reaches the offline rule, whose reconnects would break a
/// handshake still under way.
pub fn settled_state(
    listed: &Listed,
    offline_since: Option<&tokio::time::Instant>,
    settle: Duration,
) -> Listed {
    let mut l = listed.clone();
    if l.state == Link::Offline && offline_since.is_some_and(|t| t.elapsed() < settle) {
        l.state = Link::Connecting;
    }
    l
}

/// For each phone whose state in `polled` (the list asked once) is not `tracked`'s (the
/// tracker's), a line saying so.
pub fn untracked_changes(tracked: &[Listed], polled: &[Listed]) -> Vec<String> {
    polled
        .iter()
        .filter_map(|l| {
            let was = tracked.iter().find(|t| t.serial == l.serial)?;
            (was.state != l.state).then(|| {
                format!(
                    "the adb server lists {} as {}; its device tracker still says {}",
                    l.serial,
                    l.state.as_str(),
                    was.state.as_str()
                )
            })
        })
        .collect()
}

/// Warnings for the values of `missing` (`battery level (why)`, ...) that `serial` has
/// not been warned about: one per phone and value, until the value is read again, so
/// that losing it later warns again. `warned` holds (serial, value name).
pub fn missing_value_warnings(
    warned: &mut BTreeSet<(String, String)>,
    serial: &str,
    missing: &[String],
) -> Vec<String> {
    let name = |v: &str| v.split(" (").next().unwrap_or(v).to_string();
    let names: BTreeSet<String> = missing.iter().map(|v| name(v)).collect();
    warned.retain(|(s, n)| s != serial || names.contains(n));
    missing
        .iter()
        .filter(|v| warned.insert((serial.to_string(), name(v))))
        .map(|v| {
            format!(
                "{serial}: cannot read its {v}; the rules that need it cannot run until it is read again"
            )
        })
        .collect()
}

/// One phone as the snapshot shows it, from its listing and its last round (if any).
pub fn build_device(listed: &Listed, round: Option<&PhoneRound>) -> Device {
    let mut d = Device::listed(DeviceKind::Android, &listed.serial, listed.state.clone());
    if let Some(device_type) = &listed.device {
        d.device_type = Some(device_type.clone());
    }
    d.usb_path.clone_from(&listed.devpath);
    if let Some(r) = round {
        if let Some(props) = &r.props {
            if let Some(name) = dimensions::device_name(props) {
                d.device_type = Some(name);
            }
            d.booting = props.get("sys.boot_completed").map(|v| v.trim()) != Some("1");
            d.model = props
                .get("ro.product.model")
                .map(|m| m.trim())
                .filter(|m| !m.is_empty())
                .map(str::to_string);
            d.build = dimensions::android_build(props);
        }
        d.battery_percent = r.battery.as_ref().and_then(|b| b.percent);
        d.powered = r.battery.as_ref().and_then(|b| b.powered);
        d.battery_health = r.battery.as_ref().and_then(|b| b.health);
        d.data_free_bytes = r.data_free;
        d.temperatures = temperatures(&r.thermal, r.battery.as_ref());
        d.uptime_secs = r.uptime;
        d.missing_values.clone_from(&r.missing_values);
        d.read_at_unix = r.at_unix;
    }
    d.fault = if listed.state != Link::Device {
        Some(Fault::LinkNotReady)
    } else {
        match round {
            None => Some(Fault::NotInterrogated),
            Some(PhoneRound {
                props: None,
                failure,
                answered: true,
                ..
            }) => Some(Fault::Unreadable(
                failure.clone().unwrap_or_else(|| "no getprop".into()),
            )),
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
            let none = dimensions::Packages::new();
            let packages = round.map_or(&none, |r| &r.packages);
            d.dimensions = dimensions::android_device(props, packages);
        }
    }
    d
}

/// `host:connect` for a network phone the adb server does not list, on its own task
/// (the server answers once the phone's handshake is over, or its connect failed).
/// The first attempt of an absence and every success are logged; the retries of a
/// phone that stays away only at debug, so a phone unplugged for a day is no flood.
fn connect_again(client: &Client, serial: String, why: Why) {
    let first = match why {
        Why::ServerRestarted => {
            log::info!(
                "connecting {serial} again: the adb server was restarted and the new one \
                 does not know this network phone"
            );
            true
        }
        Why::Away { attempts: 1 } => {
            log::info!(
                "connecting {serial} again: this network phone left the adb server's list; \
                 trying every round until it is back"
            );
            true
        }
        Why::Away { attempts } => {
            log::debug!("connecting {serial} again (attempt {attempts})");
            false
        }
    };
    let client = client.clone();
    tokio::spawn(async move {
        match client.connect_device(&serial).await {
            Ok(said) if said.contains("connected to") => log::info!("{serial}: {said}"),
            Ok(said) if first => {
                log::warn!("cannot connect {serial} again yet: the adb server said {said:?}")
            }
            Ok(said) => log::debug!("cannot connect {serial} again: {said:?}"),
            Err(e) if first => log::warn!("cannot connect {serial} again yet: {e}"),
            Err(e) => log::debug!("cannot connect {serial} again: {e}"),
        }
    });
}

/// Follows `host:track-devices-l`, again and again: the server may be starting, or be
/// killed and restarted under us (an adb client of another version does that). The
/// network phones (`adb connect`) it has seen are kept connected (`adb::network`):
/// a restarted server knows only the USB phones, and a running one forgets a network
/// phone that a reconnect found down.
async fn track(
    client: Client,
    round: Duration,
    lists: mpsc::UnboundedSender<String>,
    mut shutdown: Shutdown,
) {
    let mut retry = Retry::new(TRACK_RETRY_MIN, TRACK_RETRY_MAX);
    let mut waiting_logged = false;
    let mut network = NetworkPhones::new(round);
    loop {
        match client.track_devices().await {
            Ok(mut tracker) => {
                match client.version().await {
                    Ok(v) => log::info!("following the device list of adb server protocol {v}"),
                    Err(e) => log::info!("following the adb server's device list ({e})"),
                }
                retry.succeeded();
                waiting_logged = false;
                let mut first = true;
                loop {
                    // A timer only while a network phone is away: a tokio timer a round
                    // away costs two wake-ups (see `runtime::clock`), every round.
                    let due = network.next_due();
                    tokio::select! {
                        frame = tracker.next() => match frame {
                            Ok(text) => {
                                let now = tokio::time::Instant::now();
                                let first = std::mem::take(&mut first);
                                for (serial, why) in network.follow(&text, first, now) {
                                    connect_again(&client, serial, why);
                                }
                                if lists.send(text).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                log::warn!("lost the device list ({e}); following it again");
                                break;
                            }
                        },
                        _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                            for (serial, why) in network.due(tokio::time::Instant::now()) {
                                connect_again(&client, serial, why);
                            }
                        }
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
        if retry.wait(&mut shutdown).await {
            return;
        }
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
    crate::devices::parse::uptime::parse(&out.stdout).ok()
}

/// One phone's round: uptime, getprop, dumpsys battery and temperatures, as one script;
/// whatever finished before `until` counts. A script the phone's shell refused (it
/// answered, and the script ended without some sections) is followed by one query per
/// missing command: a construct one shell cannot run costs only its own reading, and a
/// phone that answers is never taken for one that does not. `reading` fills the round.
async fn interrogate(
    client: &Client,
    metrics: &Metrics,
    refusals: &std::sync::Mutex<ScriptRefusals>,
    shells: &Shells,
    serial: &str,
    known: Option<ShellProtocol>,
    until: tokio::time::Instant,
) -> PhoneRound {
    let count = |e: &client::Error| {
        metrics.interrogation_errors_total.inc(e.metric_kind());
        log::debug!("{e}");
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
                    server_answered: e.server_spoke,
                    ..PhoneRound::default()
                };
            }
        },
    };
    // One script for the whole round (see `parse::batch`), read until a little before
    // the phone's deadline: a hung command costs only its own output and those after
    // it, so the commands go from least to most likely to hang.
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static INPUT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| parse::batch::script(&ROUND_COMMANDS));
    let ran = match protocol {
        ShellProtocol::V2 => {
            let input = INPUT.get_or_init(|| parse::batch::session_input(script));
            shells.round(client, serial, input, until).await
        }
        ShellProtocol::V1 => client.shell_until(serial, script, protocol, until).await,
    };
    let server_answered = server_answered(protocol, &ran);
    let (sections, end, output) = match ran {
        Ok(p) => (parse::batch::split(&p.output.stdout), p.end, p.output),
        Err(e) => {
            count(&e);
            return PhoneRound {
                protocol: Some(protocol),
                failure: Some(format!("the round's script: {}", e.what_happened())),
                offline: says_offline(&e),
                server_answered,
                ..PhoneRound::default()
            };
        }
    };
    match end {
        End::Finished => {}
        // One timeout per round, whichever command hung.
        End::Deadline => count(&client::Error::timed_out("the round's script", serial)),
        End::OverLimit => {
            metrics
                .interrogation_errors_total
                .inc(InterrogationErrorKind::AdbProtocol);
            log::debug!(
                "{serial}: {} printed over {MAX_OUTPUT} bytes; dropped the round's connection",
                reading::cut(sections.len())
            );
        }
    }
    let words = reading::refusal(end, &sections, &output);
    let line = refusals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note(serial, words.as_deref());
    if let Some(line) = line {
        log::warn!("{line}");
    }
    // A refused script is followed by one query per command it left out.
    let mut alone = None;
    if words.is_some() {
        metrics
            .interrogation_errors_total
            .inc(InterrogationErrorKind::RoundScript);
        let mut ran = Vec::new();
        for (name, cmd) in reading::missing(&sections) {
            match tokio::time::timeout_at(until, client.shell(serial, cmd, protocol)).await {
                Ok(Ok(out)) => ran.push((
                    *name,
                    match parse::batch::alone(name, &out.stdout, &out.stderr, out.exit_code) {
                        Ok(s) => Alone::Read(s),
                        Err(words) => Alone::Refused(words),
                    },
                )),
                Ok(Err(e)) => {
                    count(&e);
                    ran.push((*name, Alone::Unanswered(e.what_happened())));
                }
                Err(_) => {
                    count(&client::Error::timed_out(cmd, serial));
                    let why = "no answer before the round's deadline".to_string();
                    ran.push((*name, Alone::Unanswered(why)));
                    break;
                }
            }
        }
        alone = Some(ran);
    }
    let script = Script {
        sections,
        end,
        alone,
    };
    // Old phones have no thermal service: their zones are in sysfs, one more request.
    let sysfs = if script.needs_sysfs_thermal() {
        let cmd = parse::thermal::SYSFS_COMMAND;
        Some(
            match tokio::time::timeout_at(until, client.shell(serial, cmd, protocol)).await {
                Ok(Ok(out)) => Ok(out.stdout),
                Ok(Err(e)) => {
                    count(&e);
                    Err(e.to_string())
                }
                Err(_) => {
                    let e = client::Error::timed_out(cmd, serial);
                    count(&e);
                    Err(e.to_string())
                }
            },
        )
    } else {
        None
    };
    let filled = reading::fill(serial, protocol, &script, sysfs);
    for kind in filled.count {
        metrics.interrogation_errors_total.inc(kind);
    }
    for line in filled.debug {
        log::debug!("{line}");
    }
    PhoneRound {
        server_answered,
        ..filled.round
    }
}

/// Whether a round's script showed the adb server answering (which spares the round's
/// `host:version` probe): a new stream's OKAY did; on a kept-open shell, which asks
/// the server nothing, only output that came through it, or an end other than the
/// deadline, does; a failure, when the server had spoken on its connection.
fn server_answered(protocol: ShellProtocol, ran: &Result<client::Partial, client::Error>) -> bool {
    match ran {
        Ok(p) => {
            protocol == ShellProtocol::V1
                || p.end != End::Deadline
                || !(p.output.stdout.is_empty() && p.output.stderr.is_empty())
        }
        Err(e) => e.server_spoke,
    }
}

/// Whether the adb server answered that the phone's transport is gone (`FAIL: device
/// offline`), which its device list may not show yet.
fn says_offline(e: &client::Error) -> bool {
    matches!(&e.kind, client::ErrorKind::Fail { message } if message.contains("device offline"))
}

/// The adb server and its phones, as the watcher uses them.
#[derive(Clone)]
pub struct Adb {
    client: Client,
    metrics: Arc<Metrics>,
    refusals: Arc<std::sync::Mutex<ScriptRefusals>>,
    shells: Arc<Shells>,
    /// `--interrogate-every`: how often an absent network phone may be connected.
    round: Duration,
    /// To the supervisor of our adb server (see `adb::server`): kill it, and why.
    kill: mpsc::UnboundedSender<String>,
}

impl Adb {
    /// The adb server at `addr` (`--adb-server`), each connect and read under `io`,
    /// rounds every `round`; `kill` reaches the supervisor of the server we run.
    pub fn connect(
        addr: SocketAddr,
        io: Duration,
        round: Duration,
        metrics: Arc<Metrics>,
        kill: mpsc::UnboundedSender<String>,
    ) -> Adb {
        Adb {
            client: Client::new(addr, io),
            round,
            metrics,
            refusals: Arc::default(),
            shells: Arc::default(),
            kill,
        }
    }

    fn count(&self, e: &client::Error) {
        self.metrics.interrogation_errors_total.inc(e.metric_kind());
    }
}

impl AndroidPhones for Adb {
    fn track(&self, lists: mpsc::UnboundedSender<String>, shutdown: Shutdown) -> BoxFuture<()> {
        Box::pin(track(self.client.clone(), self.round, lists, shutdown))
    }

    fn list_now(&self) -> BoxFuture<Result<String, String>> {
        let this = self.clone();
        Box::pin(async move {
            this.client.devices_text().await.map_err(|e| {
                this.count(&e);
                e.to_string()
            })
        })
    }

    fn interrogate(
        &self,
        serial: &str,
        known: Option<ShellProtocol>,
        until: tokio::time::Instant,
    ) -> BoxFuture<PhoneRound> {
        let this = self.clone();
        let serial = serial.to_string();
        Box::pin(async move {
            let (client, metrics) = (&this.client, &this.metrics);
            interrogate(
                client,
                metrics,
                &this.refusals,
                &this.shells,
                &serial,
                known,
                until,
            )
            .await
        })
    }

    fn start_round(&self, online: &[&str]) {
        self.shells.start_round(online);
    }

    fn reboot(&self, serial: &str, protocol: ShellProtocol) -> BoxFuture<Result<(), String>> {
        let (client, serial) = (self.client.clone(), serial.to_string());
        Box::pin(async move { reboot_and_wait(&client, &serial, protocol).await })
    }

    fn reconnect(&self, serial: &str) -> BoxFuture<Result<(), String>> {
        let (client, serial) = (self.client.clone(), serial.to_string());
        let this = self.clone();
        Box::pin(async move {
            client.reconnect(&serial).await.map_err(|e| {
                this.count(&e);
                e.to_string()
            })
        })
    }

    fn restart_server(&self) -> BoxFuture<Result<(), String>> {
        let this = self.clone();
        Box::pin(async move {
            // The server closes the connection as it exits: that is the answer.
            match this.client.kill_server().await {
                Ok(()) => Ok(()),
                Err(e) if e.kind == client::ErrorKind::Io => Ok(()),
                Err(e) => {
                    this.count(&e);
                    Err(e.to_string())
                }
            }
        })
    }

    fn probe_server(&self) -> BoxFuture<Result<(), String>> {
        let this = self.clone();
        Box::pin(async move {
            this.client.version().await.map(drop).map_err(|e| {
                this.count(&e);
                e.to_string()
            })
        })
    }

    fn kill_server(&self, why: String) {
        if self.kill.send(why).is_err() {
            log::warn!("cannot kill the adb server: its supervisor has stopped");
        }
    }

    fn reconnect_offline(&self) -> BoxFuture<Result<(), String>> {
        let this = self.clone();
        Box::pin(async move {
            this.client.reconnect_offline().await.map_err(|e| {
                this.count(&e);
                e.to_string()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::phones::Props;
    use crate::devices::verdict::Memory;
    use std::collections::BTreeSet;

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

    #[test]
    fn the_server_answered_when_its_reply_or_the_phone_s_output_came() {
        let ran = |stdout: &str, end| {
            Ok(client::Partial {
                output: client::ShellOutput {
                    stdout: stdout.into(),
                    stderr: String::new(),
                    exit_code: None,
                },
                end,
            })
        };
        let (v1, v2) = (ShellProtocol::V1, ShellProtocol::V2);
        // A new stream (v1) was opened with the server's OKAY, whatever came after.
        assert!(server_answered(v1, &ran("", End::Deadline)));
        // A kept shell that heard nothing by the deadline shows nothing of the server.
        assert!(!server_answered(v2, &ran("", End::Deadline)));
        assert!(server_answered(v2, &ran("1.0 2.0\n", End::Deadline)));
        assert!(server_answered(v2, &ran("", End::Finished)));
        let failed = client::Error::timed_out("shell,v2,raw:", "S1");
        assert!(!server_answered(v2, &Err(failed.clone())));
        let spoke = client::Error {
            server_spoke: true,
            ..failed
        };
        assert!(server_answered(v2, &Err(spoke)));
    }

    #[test]
    fn a_state_the_tracker_did_not_report_is_named() {
        let tracked = [listed("U", "offline"), listed("S", "device")];
        let polled = [
            listed("U", "unauthorized"),
            listed("S", "device"),
            listed("N", "device"),
        ];
        assert_eq!(
            untracked_changes(&tracked, &polled),
            ["the adb server lists U as unauthorized; its device tracker still says offline"]
        );
    }

    #[test]
    fn a_missing_value_warns_once_until_it_is_read_again() {
        let mut warned = BTreeSet::new();
        let lost = [
            "temperature (no sensor)".to_string(),
            "battery level (no line)".to_string(),
        ];
        let first = missing_value_warnings(&mut warned, "S1", &lost);
        assert_eq!(first.len(), 2);
        assert!(
            first[0].starts_with("S1: cannot read its temperature (no sensor);"),
            "{first:?}"
        );
        assert!(missing_value_warnings(&mut warned, "S1", &lost).is_empty());
        assert_eq!(
            missing_value_warnings(&mut warned, "S2", &lost[..1]).len(),
            1
        );
        // Read again, then lost again: a new warning.
        assert!(missing_value_warnings(&mut warned, "S1", &lost[1..]).is_empty());
        assert_eq!(missing_value_warnings(&mut warned, "S1", &lost).len(), 1);
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
            powered: None,
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
    fn a_device_from_the_kept_props_is_the_device_from_all_of_them() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/adb/getprop_pixel_android14.txt"
        ));
        let with = |props| PhoneRound {
            props: Some(props),
            ..answered(true)
        };
        let all = with(crate::devices::parse::getprop::parse(text, |_| true).unwrap());
        let kept =
            with(crate::devices::parse::getprop::parse(text, dimensions::is_read_prop).unwrap());
        let listed = listed("S1", "device");
        let device = build_device(&listed, Some(&kept));
        assert!(device.model.is_some() && !device.booting && !device.dimensions.is_empty());
        assert_eq!(device, build_device(&listed, Some(&all)));
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
        let d = build_device(&listed("S1", "device"), Some(&answered(true)));
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
        let d = build_device(&listed("S1", "device"), Some(&answered(false)));
        assert_eq!(d.unusable().as_deref(), Some("booting"));
        assert!(d.dimensions.is_empty());
    }

    #[test]
    fn a_phone_not_in_device_state_is_not_usable() {
        let d = build_device(&listed("S1", "unauthorized"), None);
        assert_eq!(d.state_word(), "unauthorized");
        assert_eq!(d.unusable().as_deref(), Some("adb state unauthorized"));
    }

    #[test]
    fn a_phone_without_getprop_says_why() {
        let round = PhoneRound {
            failure: Some("timed out".into()),
            ..PhoneRound::default()
        };
        let d = build_device(&listed("S1", "device"), Some(&round));
        assert_eq!(d.unusable().as_deref(), Some("not answering: timed out"));
        let d = build_device(&listed("S1", "device"), None);
        assert_eq!(d.unusable().as_deref(), Some("not interrogated yet"));
    }

    #[test]
    fn a_transport_that_answers_device_offline_is_marked_so() {
        let round = PhoneRound {
            failure: Some("the round's script: the server said FAIL: device offline".into()),
            offline: true,
            ..PhoneRound::default()
        };
        let d = build_device(&listed("S1", "device"), Some(&round));
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
            server_spoke: true,
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
            build_device(&l, Some(&round)).device_type.as_deref(),
            Some("msm8998")
        );
        let props = round.props.as_mut().unwrap();
        props.insert("ro.build.product".into(), "sailfish".into());
        assert_eq!(
            build_device(&l, Some(&round)).device_type.as_deref(),
            Some("sailfish")
        );
    }

    #[test]
    fn a_rebooting_phone_keeps_its_last_facts() {
        let mut d = build_device(&listed("S1", "offline"), Some(&answered(true)));
        d.mark_rebooting("after task");
        assert_eq!(d.state_word(), "rebooting");
        assert_eq!(d.unusable().as_deref(), Some("rebooting after task"));
        assert_eq!(d.battery_percent, Some(80.0));
    }

    #[test]
    fn a_fresh_offline_is_shown_as_connecting() {
        let l = listed("S1", "offline");
        let now = tokio::time::Instant::now();
        let settle = Duration::from_secs(2);
        assert_eq!(
            settled_state(&l, Some(&now), settle).state,
            Link::Connecting
        );
        let long_ago = now - settle;
        assert_eq!(
            settled_state(&l, Some(&long_ago), settle).state,
            Link::Offline
        );
        assert_eq!(
            settled_state(&listed("S1", "device"), Some(&now), settle).state,
            Link::Device
        );
    }

    #[test]
    fn no_permissions_is_quarantined_with_the_usb_remedy() {
        let text = "1-1.4                  no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-1.4 transport_id:2\n";
        let listing = parse::devices_l::parse(text).unwrap();
        let d = build_device(&listing[0], None);
        assert_eq!(d.state_word(), "no permissions");
        let t = crate::devices::verdict::TEST_THRESHOLDS;
        let a = crate::devices::verdict::decide(
            &Memory::default(),
            &[d],
            &BTreeSet::new(),
            crate::devices::verdict::Outside {
                host: &crate::devices::verdict::Host::default(),
                notes: &crate::state::notes::Notes::default(),
            },
            &t,
            0.0,
            true,
        );
        assert_eq!(a.reasons.quarantined.len(), 1);
        assert!(
            a.reasons.quarantined[0].contains("/dev/bus/usb"),
            "{:?}",
            a.reasons
        );
    }
}
