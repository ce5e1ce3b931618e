//! The program's own counters, created once and owned by `state::Shared`.
//!
//! Components hold `&Metrics` (through `Shared`) and bump fields directly: nothing is
//! looked up by name on a hot path. Device gauges are not stored here; they are derived
//! from the current snapshot at scrape time, so a phone that disappears stops being
//! exported instead of freezing at its last value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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

/// A value that goes up and down.
#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
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
    fn observe(&mut self, secs: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; DURATION_BUCKETS.len() + 1];
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
    /// 1 while the bot process is running.
    pub bot_up: Gauge,
    /// Exit code of the last bot exit, or 128+signal.
    pub bot_last_exit_code: Gauge,
    /// 1 while the bot is considered crash-looping.
    pub bot_crashloop: Gauge,
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
    pub bot_restarts: u64,
    pub snapshot: &'a crate::snapshot::Snapshot,
    /// 1 when the bot reports (or would report) a quarantine, else 0.
    pub quarantined: bool,
    pub maintenance: bool,
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

fn labels(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!(
        "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}\n"
    ));
}

fn sample(out: &mut String, name: &str, label_names: &[&str], values: &[String], v: f64) {
    out.push_str(&format!(
        "{PREFIX}{name}{} {}\n",
        labels(label_names, values),
        fmt_value(v)
    ));
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn histogram(out: &mut String, name: &str, help: &str, label_names: &[&str], h: &Histogram) {
    family(out, name, "histogram", help);
    for (values, data) in h.series() {
        let mut cumulative = 0;
        let mut names: Vec<&str> = label_names.to_vec();
        names.push("le");
        for (i, count) in data.buckets.iter().enumerate() {
            cumulative += count;
            let le = DURATION_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |b| fmt_value(*b));
            let mut vs = values.clone();
            vs.push(le);
            sample(
                out,
                &format!("{name}_bucket"),
                &names,
                &vs,
                cumulative as f64,
            );
        }
        sample(out, &format!("{name}_sum"), label_names, &values, data.sum);
        sample(
            out,
            &format!("{name}_count"),
            label_names,
            &values,
            data.count as f64,
        );
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
        sample(out, name, label_names, &values, v as f64);
    }
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
        let mut out = String::with_capacity(8192);
        family(
            &mut out,
            "build_info",
            "gauge",
            "Version and git commit of the running binary; always 1.",
        );
        sample(
            &mut out,
            "build_info",
            &["version", "commit"],
            &[self.version.to_string(), self.commit.to_string()],
            1.0,
        );
        family(
            &mut out,
            "bot_up",
            "gauge",
            "1 while the Swarming bot process is running.",
        );
        sample(&mut out, "bot_up", &[], &[], m.bot_up.get() as f64);
        family(
            &mut out,
            "bot_restarts_total",
            "counter",
            "Times the Swarming bot was started again after it exited.",
        );
        sample(
            &mut out,
            "bot_restarts_total",
            &[],
            &[],
            self.bot_restarts as f64,
        );
        family(
            &mut out,
            "bot_last_exit_code",
            "gauge",
            "Exit code of the last bot exit, or 128+signal.",
        );
        sample(
            &mut out,
            "bot_last_exit_code",
            &[],
            &[],
            m.bot_last_exit_code.get() as f64,
        );
        family(
            &mut out,
            "bot_crashloop",
            "gauge",
            "1 while the bot dies five times within a minute.",
        );
        sample(
            &mut out,
            "bot_crashloop",
            &[],
            &[],
            m.bot_crashloop.get() as f64,
        );
        labeled_counter(
            &mut out,
            "bot_zip_downloads_total",
            "Downloads of swarming_bot.zip, by result.",
            &["result"],
            &m.bot_zip_downloads_total,
        );
        labeled_counter(
            &mut out,
            "token_fetches_total",
            "OAuth token fetches, by result.",
            &["result"],
            &m.token_fetches_total,
        );
        labeled_counter(
            &mut out,
            "hook_requests_total",
            "Hook requests, by route and HTTP status code.",
            &["route", "code"],
            &m.hook_requests_total,
        );
        histogram(
            &mut out,
            "hook_request_duration_seconds",
            "Time to answer a hook request.",
            &["route"],
            &m.hook_request_duration_seconds,
        );

        let devices = &self.snapshot.devices;
        family(
            &mut out,
            "device_up",
            "gauge",
            "1 when the device is usable for tasks, else 0.",
        );
        for d in devices {
            let up = d.unusable.is_none() && d.state == "device";
            let values = [
                d.serial.clone(),
                d.kind.as_str().to_string(),
                d.device_type.clone().unwrap_or_default(),
            ];
            sample(
                &mut out,
                "device_up",
                &["serial", "kind", "device_type"],
                &values,
                f64::from(u8::from(up)),
            );
        }
        family(
            &mut out,
            "device_state",
            "gauge",
            "1 for the state the device is in, 0 for the others.",
        );
        for d in devices {
            for state in DEVICE_STATES {
                let v = f64::from(u8::from(d.state == *state));
                sample(
                    &mut out,
                    "device_state",
                    &["serial", "state"],
                    &[d.serial.clone(), state.to_string()],
                    v,
                );
            }
            if !DEVICE_STATES.contains(&d.state.as_str()) {
                sample(
                    &mut out,
                    "device_state",
                    &["serial", "state"],
                    &[d.serial.clone(), d.state.clone()],
                    1.0,
                );
            }
        }
        family(
            &mut out,
            "device_battery_percent",
            "gauge",
            "Battery charge of the device.",
        );
        for d in devices {
            if let Some(b) = d.battery_percent {
                sample(
                    &mut out,
                    "device_battery_percent",
                    &["serial"],
                    std::slice::from_ref(&d.serial),
                    b,
                );
            }
        }
        family(
            &mut out,
            "device_temperature_celsius",
            "gauge",
            "Temperature of each sensor of the device.",
        );
        for d in devices {
            for t in &d.temperatures {
                sample(
                    &mut out,
                    "device_temperature_celsius",
                    &["serial", "sensor"],
                    &[d.serial.clone(), t.sensor.clone()],
                    t.celsius,
                );
            }
        }
        family(
            &mut out,
            "device_uptime_seconds",
            "gauge",
            "Time since the device booted.",
        );
        for d in devices {
            if let Some(u) = d.uptime_secs {
                sample(
                    &mut out,
                    "device_uptime_seconds",
                    &["serial"],
                    std::slice::from_ref(&d.serial),
                    u,
                );
            }
        }
        family(
            &mut out,
            "quarantined",
            "gauge",
            "1 while the bot reports a quarantine that needs a person.",
        );
        sample(
            &mut out,
            "quarantined",
            &[],
            &[],
            f64::from(u8::from(self.quarantined)),
        );
        family(
            &mut out,
            "maintenance",
            "gauge",
            "1 while the bot reports a maintenance condition that clears by itself.",
        );
        sample(
            &mut out,
            "maintenance",
            &[],
            &[],
            f64::from(u8::from(self.maintenance)),
        );
        histogram(
            &mut out,
            "interrogation_duration_seconds",
            "Time taken by a device interrogation round.",
            &[],
            &m.interrogation_duration_seconds,
        );
        labeled_counter(
            &mut out,
            "interrogation_errors_total",
            "Failed device queries, by kind.",
            &["kind"],
            &m.interrogation_errors_total,
        );
        family(
            &mut out,
            "adb_server_restarts_total",
            "counter",
            "Times the adb server child was started again.",
        );
        sample(
            &mut out,
            "adb_server_restarts_total",
            &[],
            &[],
            m.adb_server_restarts_total.get() as f64,
        );
        if let Some(rss) = self.resident_bytes {
            family(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of this process, from /proc/self/statm.",
            );
            sample(
                &mut out,
                "process_resident_memory_bytes",
                &[],
                &[],
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
