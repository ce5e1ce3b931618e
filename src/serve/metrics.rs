//! The program's own counters, created once and owned by `state::Shared`.
//!
//! Components hold `&Metrics` (through `Shared`) and bump fields directly: nothing is
//! looked up by name on a hot path. Device gauges are not stored here; they are derived
//! from the current snapshot at scrape time, so a phone that disappears stops being
//! exported instead of freezing at its last value. The bot gauges are derived the same
//! way from the supervisor's `BotStatus`, the one record of the bot.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::devices::snapshot::Link;
use crate::state::BotStatus;

/// A monotonically increasing count.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters keyed by their label values, in the order the family declares its labels.
#[derive(Default, Debug)]
pub struct LabeledCounter(Mutex<BTreeMap<Vec<String>, u64>>);

impl LabeledCounter {
    pub fn inc(&self, labels: &[&str]) {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }
    /// Every series so far, sorted by label values.
    pub fn series(&self) -> Vec<(Vec<String>, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Upper bounds, in seconds, shared by every duration histogram: hooks answer in
/// microseconds, device rounds take seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Cumulative-at-render histogram of durations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramData {
    /// Count per bucket of [`DURATION_BUCKETS`] (not cumulative), plus +Inf last.
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl HistogramData {
    fn empty() -> HistogramData {
        HistogramData {
            buckets: vec![0; DURATION_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, secs: f64) {
        if self.buckets.is_empty() {
            *self = HistogramData::empty();
        }
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

/// Duration histograms keyed by label values (empty key for an unlabeled family).
#[derive(Default, Debug)]
pub struct Histogram(Mutex<BTreeMap<Vec<String>, HistogramData>>);

impl Histogram {
    pub fn observe(&self, labels: &[&str], d: Duration) {
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .observe(d.as_secs_f64());
    }
    pub fn series(&self) -> Vec<(Vec<String>, HistogramData)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Every counter the program keeps. Field names follow the exported family names
/// without the `test_machine_monitor_` prefix.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Label `result`: `ok`, `http_error`, `network_error`, `bad_zip`, `io_error`.
    pub bot_zip_downloads_total: LabeledCounter,
    /// Label `result`: `ok`, `http_error`, `network_error`, `bad_response`, `config_error`.
    pub token_fetches_total: LabeledCounter,
    /// Labels `route`, `code`.
    pub hook_requests_total: LabeledCounter,
    /// Label `route`.
    pub hook_request_duration_seconds: Histogram,
    /// Unlabeled.
    pub interrogation_duration_seconds: Histogram,
    /// Label `kind`: what failed (`adb_connect`, `timeout`, `parse`, `ios_tool`, ...).
    pub interrogation_errors_total: LabeledCounter,
    pub adb_server_restarts_total: Counter,
}

/// The exposition of the program's families, the device families of `snapshot`, and
/// the process's resident memory, in the Prometheus text format 0.0.4.
pub struct Exposition<'a> {
    pub metrics: &'a Metrics,
    pub version: &'a str,
    pub commit: &'a str,
    /// The bot gauges' source.
    pub bot: &'a BotStatus,
    pub snapshot: &'a crate::devices::snapshot::Snapshot,
    /// 1 when the bot reports (or would report) a quarantine, else 0.
    pub quarantined: bool,
    pub maintenance: bool,
    /// The thresholds of the verdict, so that alert rules need not repeat them.
    pub max_temperature_celsius: f64,
    pub min_battery_percent: f64,
    /// From /proc/self/statm; `None` when it could not be read.
    pub resident_bytes: Option<u64>,
}

const PREFIX: &str = "test_machine_monitor_";

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `{a="x",b="y"}`, or nothing for an unlabeled series.
fn write_labels(out: &mut String, names: &[&str], values: &[&str]) {
    if names.is_empty() {
        return;
    }
    out.push('{');
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        out.push_str(&escape_label(v));
        out.push('"');
    }
    out.push('}');
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(
        out,
        "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}\n"
    );
}

/// One sample line.
fn sample(out: &mut String, name: &str, label_names: &[&str], values: &[&str], v: f64) {
    out.push_str(PREFIX);
    out.push_str(name);
    write_labels(out, label_names, values);
    out.push(' ');
    write_value(out, v);
    out.push('\n');
}

/// Go's `strconv.FormatFloat(v, 'g', ...)` spellings for the special values, which is
/// what the text format expects; Rust's `Display` is fine for the finite ones.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

fn histogram(out: &mut String, name: &str, help: &str, label_names: &[&str], h: &Histogram) {
    family(out, name, "histogram", help);
    let mut series = h.series();
    // An unlabeled histogram exists from the start (all zero), so that rate() and
    // histogram_quantile() have a series before the first observation.
    if series.is_empty() && label_names.is_empty() {
        series.push((Vec::new(), HistogramData::empty()));
    }
    let (bucket, sum, count) = (
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    );
    let mut names: Vec<&str> = label_names.to_vec();
    names.push("le");
    let les: Vec<String> = (0..=DURATION_BUCKETS.len())
        .map(|i| {
            let mut le = String::new();
            match DURATION_BUCKETS.get(i) {
                Some(b) => write_value(&mut le, *b),
                None => le.push_str("+Inf"),
            }
            le
        })
        .collect();
    for (values, data) in series {
        let mut vs: Vec<&str> = values.iter().map(String::as_str).collect();
        let mut cumulative = 0;
        for (n, le) in data.buckets.iter().zip(&les) {
            cumulative += n;
            vs.push(le);
            sample(out, &bucket, &names, &vs, cumulative as f64);
            vs.pop();
        }
        sample(out, &sum, label_names, &vs, data.sum);
        sample(out, &count, label_names, &vs, data.count as f64);
    }
}

fn labeled_counter(
    out: &mut String,
    name: &str,
    help: &str,
    label_names: &[&str],
    c: &LabeledCounter,
) {
    family(out, name, "counter", help);
    for (values, v) in c.series() {
        let vs: Vec<&str> = values.iter().map(String::as_str).collect();
        sample(out, name, label_names, &vs, v as f64);
    }
}

/// An unlabeled family with its one sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, v: f64) {
    family(out, name, kind, help);
    sample(out, name, &[], &[], v);
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
        let m = self.metrics;
        let devices = &self.snapshot.devices;
        // About 2 KB of fixed families, ~2.5 KB per device (mostly device_state).
        let mut out = String::with_capacity(4096 + 3072 * devices.len());
        let o = &mut out;
        family(
            o,
            "build_info",
            "gauge",
            "Version and git commit of the running binary; always 1.",
        );
        sample(
            o,
            "build_info",
            &["version", "commit"],
            &[self.version, self.commit],
            1.0,
        );
        single(
            o,
            "bot_up",
            "gauge",
            "1 while the Swarming bot process is running.",
            flag(self.bot.running),
        );
        single(
            o,
            "bot_restarts_total",
            "counter",
            "Times the Swarming bot was started again after it exited.",
            self.bot.restarts as f64,
        );
        single(
            o,
            "bot_last_exit_code",
            "gauge",
            "Exit code of the last bot exit, or 128+signal; 0 before any exit.",
            f64::from(self.bot.last_exit.map_or(0, |e| e.as_code())),
        );
        single(
            o,
            "bot_crashloop",
            "gauge",
            "1 while the bot is crash-looping (five exits within a minute).",
            flag(self.bot.crashlooping),
        );
        labeled_counter(
            o,
            "bot_zip_downloads_total",
            "Downloads of swarming_bot.zip, by result.",
            &["result"],
            &m.bot_zip_downloads_total,
        );
        labeled_counter(
            o,
            "token_fetches_total",
            "OAuth token fetches, by result.",
            &["result"],
            &m.token_fetches_total,
        );
        labeled_counter(
            o,
            "hook_requests_total",
            "Hook requests, by route and HTTP status code.",
            &["route", "code"],
            &m.hook_requests_total,
        );
        histogram(
            o,
            "hook_request_duration_seconds",
            "Time to answer a hook request, by route.",
            &["route"],
            &m.hook_request_duration_seconds,
        );

        family(
            o,
            "device_up",
            "gauge",
            "1 when the device is online and has no fault of its own (bot-wide \
             maintenance, such as too hot, is test_machine_monitor_maintenance), else 0.",
        );
        for d in devices {
            let up = d.reachable() && d.link() == Some(&Link::Device);
            sample(
                o,
                "device_up",
                &["serial", "kind", "device_type"],
                &[
                    &d.serial,
                    d.kind.as_str(),
                    d.device_type.as_deref().unwrap_or(""),
                ],
                flag(up),
            );
        }
        family(
            o,
            "device_state",
            "gauge",
            "1 for the state the device is in, 0 for the others.",
        );
        for d in devices {
            for state in DEVICE_STATES {
                let v = flag(d.state_word() == *state);
                sample(
                    o,
                    "device_state",
                    &["serial", "state"],
                    &[&d.serial, state],
                    v,
                );
            }
            if !DEVICE_STATES.contains(&d.state_word()) {
                sample(
                    o,
                    "device_state",
                    &["serial", "state"],
                    &[&d.serial, d.state_word()],
                    1.0,
                );
            }
        }
        family(
            o,
            "device_verdict",
            "gauge",
            "1 for the device's verdict (usable, maintenance or quarantined), 0 for the others.",
        );
        for d in devices {
            for verdict in ["usable", "maintenance", "quarantined"] {
                sample(
                    o,
                    "device_verdict",
                    &["serial", "verdict"],
                    &[&d.serial, verdict],
                    flag(d.verdict_word() == verdict),
                );
            }
        }
        family(
            o,
            "device_verdict_seconds",
            "gauge",
            "How long the device has had its current verdict.",
        );
        for d in devices {
            sample(
                o,
                "device_verdict_seconds",
                &["serial"],
                &[&d.serial],
                d.verdict_for_secs,
            );
        }
        family(
            o,
            "device_recovery_step",
            "gauge",
            "The recovery step a failing device is at (its consecutive failed rounds), 0 when it answers.",
        );
        for d in devices {
            sample(
                o,
                "device_recovery_step",
                &["serial"],
                &[&d.serial],
                f64::from(d.recovery_step),
            );
        }
        family(
            o,
            "device_data_free_bytes",
            "gauge",
            "Free space of the device's /data partition.",
        );
        for d in devices {
            if let Some(free) = d.data_free_bytes {
                sample(
                    o,
                    "device_data_free_bytes",
                    &["serial"],
                    &[&d.serial],
                    free as f64,
                );
            }
        }
        family(
            o,
            "device_battery_percent",
            "gauge",
            "Battery charge of the device, 0 to 100.",
        );
        for d in devices {
            if let Some(b) = d.battery_percent {
                sample(o, "device_battery_percent", &["serial"], &[&d.serial], b);
            }
        }
        family(
            o,
            "device_temperature_celsius",
            "gauge",
            "Temperature of each sensor of the device.",
        );
        for d in devices {
            for t in &d.temperatures {
                sample(
                    o,
                    "device_temperature_celsius",
                    &["serial", "sensor"],
                    &[&d.serial, &t.sensor],
                    t.celsius,
                );
            }
        }
        family(
            o,
            "device_uptime_seconds",
            "gauge",
            "Time since the device booted.",
        );
        for d in devices {
            if let Some(u) = d.uptime_secs {
                sample(o, "device_uptime_seconds", &["serial"], &[&d.serial], u);
            }
        }
        single(
            o,
            "max_temperature_celsius",
            "gauge",
            "--max-temperature: a sensor above it puts its phone in maintenance.",
            self.max_temperature_celsius,
        );
        single(
            o,
            "min_battery_percent",
            "gauge",
            "--min-battery: a battery below it puts its phone in maintenance.",
            self.min_battery_percent,
        );
        single(
            o,
            "quarantined",
            "gauge",
            "1 while the phones give a quarantine reason that needs a person.",
            flag(self.quarantined),
        );
        single(
            o,
            "maintenance",
            "gauge",
            "1 while the phones give a maintenance reason that clears by itself.",
            flag(self.maintenance),
        );
        histogram(
            o,
            "interrogation_duration_seconds",
            "Time taken by a device interrogation round.",
            &[],
            &m.interrogation_duration_seconds,
        );
        labeled_counter(
            o,
            "interrogation_errors_total",
            "Failed device queries, by kind.",
            &["kind"],
            &m.interrogation_errors_total,
        );
        single(
            o,
            "adb_server_restarts_total",
            "counter",
            "Times the adb server child was started again.",
            m.adb_server_restarts_total.get() as f64,
        );
        if let Some(rss) = self.resident_bytes {
            single(
                o,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of this process, from /proc/self/statm.",
                rss as f64,
            );
        }
        out
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
    use super::*;

    use crate::devices::snapshot::{
        usable_device, Device, DeviceKind, Link, Snapshot, State, Temperature,
    };
    use std::collections::BTreeSet;

    /// The families of issue 8's table, with their kinds.
    const ISSUE_FAMILIES: &[(&str, &str)] = &[
        ("build_info", "gauge"),
        ("bot_up", "gauge"),
        ("bot_restarts_total", "counter"),
        ("bot_last_exit_code", "gauge"),
        ("bot_crashloop", "gauge"),
        ("bot_zip_downloads_total", "counter"),
        ("token_fetches_total", "counter"),
        ("hook_requests_total", "counter"),
        ("hook_request_duration_seconds", "histogram"),
        ("device_up", "gauge"),
        ("device_state", "gauge"),
        ("device_verdict", "gauge"),
        ("device_verdict_seconds", "gauge"),
        ("device_recovery_step", "gauge"),
        ("device_data_free_bytes", "gauge"),
        ("device_battery_percent", "gauge"),
        ("device_temperature_celsius", "gauge"),
        ("device_uptime_seconds", "gauge"),
        ("max_temperature_celsius", "gauge"),
        ("min_battery_percent", "gauge"),
        ("quarantined", "gauge"),
        ("maintenance", "gauge"),
        ("interrogation_duration_seconds", "histogram"),
        ("interrogation_errors_total", "counter"),
        ("adb_server_restarts_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ];

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
        let snapshot = Snapshot {
            devices,
            ..Snapshot::default()
        };
        Exposition {
            metrics,
            version: "0.1.0",
            commit: "abc",
            bot: &BotStatus {
                restarts: 2,
                ..BotStatus::default()
            },
            snapshot: &snapshot,
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
    fn every_family_of_the_issue_has_help_and_type() {
        let text = render(&Metrics::default(), vec![phone("A1", "cpu0")]);
        assert_well_formed(&text);
        for (name, kind) in ISSUE_FAMILIES {
            let family = format!("{PREFIX}{name}");
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family} {kind}"
            );
        }
        // An unlabeled histogram is all zero before its first observation.
        assert!(text.contains(&format!(
            "{PREFIX}interrogation_duration_seconds_bucket{{le=\"+Inf\"}} 0\n"
        )));
        assert!(text.contains(&format!("{PREFIX}bot_restarts_total 2\n")));
    }

    #[test]
    fn observed_families_are_well_formed() {
        let m = Metrics::default();
        m.hook_requests_total.inc(&["get_state", "200"]);
        m.hook_requests_total.inc(&["unknown", "404"]);
        m.hook_request_duration_seconds
            .observe(&["get_state"], Duration::from_micros(300));
        m.hook_request_duration_seconds
            .observe(&["get_state"], Duration::from_millis(40));
        m.interrogation_duration_seconds
            .observe(&[], Duration::from_millis(700));
        m.interrogation_errors_total.inc(&["timeout"]);
        m.token_fetches_total.inc(&["ok"]);
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
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(&["get_state"], Duration::from_micros(400));
        h.observe(&["get_state"], Duration::from_millis(1));
        h.observe(&["get_state"], Duration::from_secs(100));
        let (labels, data) = &h.series()[0];
        assert_eq!(labels, &vec!["get_state".to_string()]);
        assert_eq!(data.count, 3);
        assert_eq!(data.buckets[0], 1);
        assert_eq!(data.buckets[1], 1);
        assert_eq!(*data.buckets.last().unwrap(), 1);
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

    #[test]
    fn labeled_counters_keep_series_apart() {
        let c = LabeledCounter::default();
        c.inc(&["ok"]);
        c.inc(&["ok"]);
        c.inc(&["http_error"]);
        assert_eq!(
            c.series(),
            vec![
                (vec!["http_error".to_string()], 1),
                (vec!["ok".to_string()], 2)
            ]
        );
    }
}
