//! The exposition of `/metrics`: the program's counters (`state::metrics`), the device
//! gauges and the bot gauges, in the Prometheus text format. Device gauges are not
//! stored; they are derived from the current snapshot at scrape time, so a phone that
//! disappears stops being exported instead of freezing at its last value. The bot gauges
//! are derived the same way from the supervisor's `BotStatus`, the one record of the bot.
//! The families themselves are the rows of `families`, the text format `text`.

mod families;
mod text;

use std::collections::BTreeMap;

use crate::state::bot_status::BotStatus;
use crate::state::metrics::{KubeEventResult, Metrics};
use crate::state::snapshot::Link;
use families::Family;
use text::{header, sample};

/// The exposition of the program's families, the device families of `snapshot`, and
/// the process's resident memory, in the Prometheus text format 0.0.4.
pub struct Exposition<'a> {
    pub metrics: &'a Metrics,
    pub version: &'a str,
    pub commit: &'a str,
    /// The bot gauges' source.
    /// Each bot's id and status: the Pi's one, or one per phone (`--bots per-device`).
    pub bots: &'a [(String, BotStatus)],
    /// Each phone's bot, by serial.
    pub phone_bots: &'a BTreeMap<String, String>,
    pub snapshot: &'a crate::state::snapshot::Snapshot,
    /// The operators' maintenance notes in force.
    pub notes: &'a crate::state::notes::Notes,
    /// Node events dropped because their queue was full.
    pub node_events_dropped: u64,
    /// 1 when the bot reports (or would report) a quarantine, else 0.
    pub quarantined: bool,
    pub maintenance: bool,
    /// The thresholds of the verdict, so that alert rules need not repeat them.
    pub max_temperature_celsius: f64,
    pub min_battery_percent: f64,
    /// From /proc/self/statm; `None` when it could not be read.
    pub resident_bytes: Option<u64>,
}

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// Every adb/iOS state a device can be in, so each device exports one series per state.
pub const DEVICE_STATES: &[&str] = &[
    "device",
    "offline",
    "unauthorized",
    "no permissions",
    "missing",
    "booting",
    "rebooting",
    "connecting",
    "authorizing",
    "bootloader",
    "recovery",
    "sideload",
    "rescue",
    "host",
    "detached",
    "unknown",
];

impl Exposition<'_> {
    pub fn render(&self) -> String {
        // About 2 KB of fixed families, ~2.5 KB per device (mostly device_state).
        let mut out = String::with_capacity(4096 + 3072 * self.snapshot.devices.len());
        for &family in Family::ALL {
            // Memory that could not be read leaves its family out entirely.
            if family == Family::ProcessResidentMemoryBytes && self.resident_bytes.is_none() {
                continue;
            }
            header(&mut out, family.row());
            self.samples(&mut out, family);
        }
        out
    }

    fn per_bot(&self, o: &mut String, f: &families::Row, value: impl Fn(&BotStatus) -> f64) {
        for (id, bot) in self.bots {
            sample(o, f, &[id], value(bot));
        }
    }

    fn samples(&self, o: &mut String, family: Family) {
        let m = self.metrics;
        let devices = &self.snapshot.devices;
        let f = family.row();
        let single = |o: &mut String, v: f64| sample(o, f, &[], v);
        match family {
            Family::BuildInfo => sample(o, f, &[self.version, self.commit], 1.0),
            Family::BotUp => self.per_bot(o, f, |b| flag(b.running)),
            Family::BotRestartsTotal => self.per_bot(o, f, |b| b.restarts as f64),
            Family::BotLastExitCode => {
                self.per_bot(o, f, |b| f64::from(b.last_exit.map_or(0, |e| e.as_code())))
            }
            Family::BotCrashloop => self.per_bot(o, f, |b| flag(b.crashlooping)),
            Family::BotSilenceKillsTotal => self.per_bot(o, f, |b| b.silence_kills as f64),
            Family::BotDraining => self.per_bot(o, f, |b| flag(b.running && b.drain.is_some())),
            Family::DeviceBot => {
                for (serial, bot) in self.phone_bots {
                    sample(o, f, &[serial, bot], flag(!bot.is_empty()));
                }
            }
            Family::BotZipDownloadsTotal => text::counter(o, f, m.bot_zip_downloads_total.series()),
            Family::TokenFetchesTotal => text::counter(o, f, m.token_fetches_total.series()),
            Family::HookRequestsTotal => text::counter(o, f, m.hook_requests_total.series()),
            Family::HookRequestDurationSeconds => {
                text::histogram(o, f, m.hook_request_duration_seconds.series())
            }
            Family::DeviceUp => {
                for d in devices {
                    let up = d.reachable() && d.link() == Some(&Link::Device);
                    let device_type = d.device_type.as_deref().unwrap_or("");
                    sample(o, f, &[&d.serial, d.kind.as_str(), device_type], flag(up));
                }
            }
            Family::DeviceState => {
                for d in devices {
                    for state in DEVICE_STATES {
                        let v = flag(d.state_word() == *state);
                        sample(o, f, &[&d.serial, state], v);
                    }
                    if !DEVICE_STATES.contains(&d.state_word()) {
                        sample(o, f, &[&d.serial, d.state_word()], 1.0);
                    }
                }
            }
            Family::DeviceVerdict => {
                for d in devices {
                    for verdict in ["usable", "maintenance", "quarantined"] {
                        let v = flag(d.verdict_word() == verdict);
                        sample(o, f, &[&d.serial, verdict], v);
                    }
                }
            }
            Family::DeviceVerdictSeconds => {
                for d in devices {
                    sample(o, f, &[&d.serial], d.verdict_for_secs);
                }
            }
            Family::DeviceRecoveryStep => {
                for d in devices {
                    sample(o, f, &[&d.serial], f64::from(d.recovery_step));
                }
            }
            Family::DeviceDataFreeBytes => {
                for d in devices {
                    if let Some(free) = d.data_free_bytes {
                        sample(o, f, &[&d.serial], free as f64);
                    }
                }
            }
            Family::DeviceBatteryPercent => {
                for d in devices {
                    if let Some(b) = d.battery_percent {
                        sample(o, f, &[&d.serial], b);
                    }
                }
            }
            Family::DeviceTemperatureCelsius => {
                for d in devices {
                    for t in &d.temperatures {
                        sample(o, f, &[&d.serial, &t.sensor], t.celsius);
                    }
                }
            }
            Family::DeviceUptimeSeconds => {
                for d in devices {
                    if let Some(u) = d.uptime_secs {
                        sample(o, f, &[&d.serial], u);
                    }
                }
            }
            Family::MaxTemperatureCelsius => single(o, self.max_temperature_celsius),
            Family::MinBatteryPercent => single(o, self.min_battery_percent),
            Family::Quarantined => single(o, flag(self.quarantined)),
            Family::Maintenance => single(o, flag(self.maintenance)),
            Family::InterrogationDurationSeconds => {
                text::histogram(o, f, m.interrogation_duration_seconds.series())
            }
            Family::InterrogationErrorsTotal => {
                text::counter(o, f, m.interrogation_errors_total.series())
            }
            Family::AdbServerRestartsTotal => single(o, m.adb_server_restarts_total.get() as f64),
            Family::MaintenanceNote => {
                if self.notes.pi.is_some() {
                    sample(o, f, &[""], 1.0);
                }
                for serial in self.notes.phones.keys() {
                    sample(o, f, &[serial], 1.0);
                }
            }
            Family::KubernetesErrorsTotal => {
                text::counter(o, f, m.kubernetes_errors_total.series())
            }
            Family::KubernetesEventsTotal => {
                let mut series = m.kubernetes_events_total.series();
                if self.node_events_dropped > 0 {
                    let label = KubeEventResult::QueueFull.as_str().to_string();
                    series.push((vec![label], self.node_events_dropped));
                    series.sort();
                }
                text::counter(o, f, series)
            }
            Family::ProcessResidentMemoryBytes => {
                if let Some(rss) = self.resident_bytes {
                    single(o, rss as f64);
                }
            }
        }
    }
}

/// Resident set size from the text of `/proc/self/statm` (second field, in pages).
pub fn parse_statm_resident(statm: &str, page_size: u64) -> Option<u64> {
    statm
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|pages| pages * page_size)
}

#[cfg(test)]
mod tests {
    use super::text::{escape_label, PREFIX};
    use super::*;
    use crate::state::metrics::{HookRoute, InterrogationErrorKind, TokenFetchResult};
    use std::time::Duration;

    use crate::state::snapshot::{
        usable_device, Device, DeviceKind, Link, Snapshot, State, Temperature,
    };
    use std::collections::BTreeSet;

    fn phone(serial: &str, sensor: &str) -> Device {
        let mut d = usable_device(DeviceKind::Android, serial);
        d.device_type = Some("redfin".into());
        d.battery_percent = Some(85.0);
        d.temperatures = vec![Temperature {
            sensor: sensor.into(),
            celsius: 31.5,
        }];
        d.uptime_secs = Some(1008.5);
        d
    }

    fn render(metrics: &Metrics, devices: Vec<Device>) -> String {
        let phone_bots = devices
            .iter()
            .map(|d| (d.serial.clone(), "pi-7".to_string()))
            .collect();
        let snapshot = Snapshot {
            devices,
            ..Snapshot::default()
        };
        let bot = BotStatus {
            restarts: 2,
            ..BotStatus::default()
        };
        Exposition {
            metrics,
            version: "0.1.0",
            commit: "abc",
            bots: &[("pi-7".to_string(), bot)],
            phone_bots: &phone_bots,
            snapshot: &snapshot,
            notes: &crate::state::notes::Notes::default(),
            node_events_dropped: 0,
            quarantined: false,
            maintenance: true,
            max_temperature_celsius: 35.0,
            min_battery_percent: 30.0,
            resident_bytes: Some(3 << 20),
        }
        .render()
    }

    /// Checks the rules of the text format that promtool and Prometheus enforce, so a
    /// regression shows here first: every sample follows its family's HELP and TYPE,
    /// counters end in `_total`, histogram buckets carry `le`, are cumulative and end at
    /// `+Inf` equal to `_count`, and no series appears twice.
    fn assert_well_formed(text: &str) {
        let mut kinds: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut last_bucket: Option<(String, f64)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty(), "{line}");
                assert!(helped.insert(name.to_string()), "HELP twice: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                assert!(kinds.insert(name.into(), kind.into()).is_none(), "{line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.replace("+Inf", "inf").parse().unwrap();
            assert!(seen.insert(series.to_string()), "duplicate series {series}");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|f| kinds.get(*f).map(String::as_str) == Some("histogram"))
                .unwrap_or(name);
            assert!(kinds.contains_key(family), "sample before its TYPE: {line}");
            if name.ends_with("_bucket") {
                let le = series.split("le=\"").nth(1).expect("bucket without le");
                let rest = series.replace(&format!("le=\"{le}"), "");
                if let Some((was, v)) = &last_bucket {
                    if *was == rest {
                        assert!(value >= *v, "buckets not cumulative: {line}");
                    }
                }
                last_bucket = Some((rest, value));
            } else if name.ends_with("_count") && family != name {
                let (_, inf) = last_bucket.take().expect("_count without buckets");
                assert_eq!(inf, value, "+Inf bucket differs from _count: {line}");
            }
        }
    }

    #[test]
    fn every_family_of_the_table_has_help_and_type_in_its_order() {
        let text = render(&Metrics::default(), vec![phone("A1", "cpu0")]);
        assert_well_formed(&text);
        let declared: Vec<&str> = text.lines().filter(|l| l.starts_with("# ")).collect();
        let mut want = Vec::new();
        for family in Family::ALL {
            let row = family.row();
            want.push(format!("# HELP {PREFIX}{} {}", row.name, row.help));
            want.push(format!("# TYPE {PREFIX}{} {}", row.name, row.kind.as_str()));
        }
        assert_eq!(declared, want);
        // An unlabeled histogram is all zero before its first observation.
        assert!(text.contains(&format!(
            "{PREFIX}interrogation_duration_seconds_bucket{{le=\"+Inf\"}} 0\n"
        )));
        assert!(text.contains(&format!("{PREFIX}bot_restarts_total{{bot=\"pi-7\"}} 2\n")));
        assert!(text.contains(&format!(
            "{PREFIX}device_bot{{serial=\"A1\",bot=\"pi-7\"}} 1\n"
        )));
    }

    #[test]
    fn observed_families_are_well_formed() {
        let m = Metrics::default();
        m.hook_requests_total.inc((HookRoute::GetState, 200));
        m.hook_requests_total.inc((HookRoute::Unknown, 404));
        m.hook_request_duration_seconds
            .observe(HookRoute::GetState, Duration::from_micros(300));
        m.hook_request_duration_seconds
            .observe(HookRoute::GetState, Duration::from_millis(40));
        m.interrogation_duration_seconds
            .observe((), Duration::from_millis(700));
        m.interrogation_errors_total
            .inc(InterrogationErrorKind::Timeout);
        m.token_fetches_total.inc(TokenFetchResult::Ok);
        let text = render(&m, vec![phone("A1", "cpu0"), phone("B2", "battery")]);
        assert_well_formed(&text);
        assert!(text.contains(&format!(
            "{PREFIX}hook_request_duration_seconds_bucket{{route=\"get_state\",le=\"0.0005\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "{PREFIX}hook_request_duration_seconds_bucket{{route=\"get_state\",le=\"+Inf\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "{PREFIX}hook_requests_total{{route=\"get_state\",code=\"200\"}} 1\n"
        )));
    }

    #[test]
    fn a_serial_with_a_quote_is_escaped_everywhere() {
        let serial = "evil\"serial\\with\nnewline";
        let text = render(&Metrics::default(), vec![phone(serial, "cpu\"0")]);
        assert_well_formed(&text);
        let escaped = r#"serial="evil\"serial\\with\nnewline""#;
        // Every device family carries the escaped serial, and no line holds it raw.
        for name in [
            "device_up",
            "device_state",
            "device_battery_percent",
            "device_temperature_celsius",
            "device_uptime_seconds",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{PREFIX}{name}{{{escaped}"))),
                "{name}:\n{text}"
            );
        }
        assert!(text.contains(r#"sensor="cpu\"0"} 31.5"#), "{text}");
        assert!(!text.contains("evil\"serial\\with"));
    }

    #[test]
    fn a_device_that_disappears_stops_being_exported() {
        let m = Metrics::default();
        let both = render(&m, vec![phone("STAYS", "cpu0"), phone("GOES", "cpu0")]);
        assert!(both.contains("serial=\"GOES\""));
        let after = render(&m, vec![phone("STAYS", "cpu0")]);
        assert!(!after.contains("GOES"), "{after}");
        assert!(after.contains("serial=\"STAYS\""));
        // The family declarations stay, with no samples, when no phone is left.
        let none = render(&m, Vec::new());
        assert!(!none.contains("STAYS"));
        assert!(none.contains(&format!("# TYPE {PREFIX}device_battery_percent gauge\n")));
        assert_well_formed(&none);
    }

    #[test]
    fn one_series_per_state_and_unknown_states_are_kept() {
        let mut odd = phone("ODD", "cpu0");
        odd.state = State::Listed(Link::from_adb("sideload-auto-reboot"));
        let text = render(&Metrics::default(), vec![phone("A1", "cpu0"), odd]);
        assert_well_formed(&text);
        let states = |serial: &str, v: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{PREFIX}device_state{{serial=\"{serial}\"")))
                .filter(|l| l.ends_with(v))
                .count()
        };
        assert_eq!(states("A1", " 1"), 1);
        assert_eq!(states("A1", " 0"), DEVICE_STATES.len() - 1);
        assert_eq!(states("ODD", " 1"), 1);
        assert_eq!(states("ODD", " 0"), DEVICE_STATES.len());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            escape_label(
                r#"a"b\c
d"#
            ),
            r#"a\"b\\c\nd"#
        );
    }

    #[test]
    fn statm_resident_is_the_second_field() {
        assert_eq!(
            parse_statm_resident("1000 250 10 1 0 50 0\n", 4096),
            Some(1_024_000)
        );
        assert_eq!(parse_statm_resident("garbage", 4096), None);
    }
}
