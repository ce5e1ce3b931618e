//! The program's own counters, created once and owned by `state::Shared`.
//!
//! Components hold `&Metrics` (through their context) and bump fields directly: nothing
//! is looked up by name on a hot path. The values of closed labels are the enums of
//! `labels`; the exposition (families, text format) is `serve::metrics`'s.

mod labels;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use labels::{
    HookRoute, InterrogationErrorKind, KubeErrorLabel, KubeEventResult, LabelValues,
    TokenFetchResult, ZipDownloadResult,
};

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

/// Counters keyed by their label values `L`, in the order the family declares its labels.
#[derive(Debug)]
pub struct LabeledCounter<L>(Mutex<BTreeMap<Vec<String>, u64>>, PhantomData<fn(L)>);

impl<L> Default for LabeledCounter<L> {
    fn default() -> Self {
        LabeledCounter(Mutex::default(), PhantomData)
    }
}

impl<L: LabelValues> LabeledCounter<L> {
    pub fn inc(&self, labels: L) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels.values())
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
    pub fn empty() -> HistogramData {
        HistogramData {
            buckets: vec![0; DURATION_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, secs: f64) {
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

/// Duration histograms keyed by their label values `L` (`()` for an unlabeled family).
#[derive(Debug)]
pub struct Histogram<L>(
    Mutex<BTreeMap<Vec<String>, HistogramData>>,
    PhantomData<fn(L)>,
);

impl<L> Default for Histogram<L> {
    fn default() -> Self {
        Histogram(Mutex::default(), PhantomData)
    }
}

impl<L: LabelValues> Histogram<L> {
    pub fn observe(&self, labels: L, d: Duration) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels.values())
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
    pub bot_zip_downloads_total: LabeledCounter<ZipDownloadResult>,
    pub token_fetches_total: LabeledCounter<TokenFetchResult>,
    pub hook_requests_total: LabeledCounter<(HookRoute, u16)>,
    pub hook_request_duration_seconds: Histogram<HookRoute>,
    pub interrogation_duration_seconds: Histogram<()>,
    pub interrogation_errors_total: LabeledCounter<InterrogationErrorKind>,
    pub adb_server_restarts_total: Counter,
    pub kubernetes_errors_total: LabeledCounter<KubeErrorLabel>,
    pub kubernetes_events_total: LabeledCounter<KubeEventResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(HookRoute::GetState, Duration::from_micros(400));
        h.observe(HookRoute::GetState, Duration::from_millis(1));
        h.observe(HookRoute::GetState, Duration::from_secs(100));
        let (labels, data) = &h.series()[0];
        assert_eq!(labels, &vec!["get_state".to_string()]);
        assert_eq!(data.count, 3);
        assert_eq!(data.buckets[0], 1);
        assert_eq!(data.buckets[1], 1);
        assert_eq!(*data.buckets.last().unwrap(), 1);
    }

    #[test]
    fn labeled_counters_keep_series_apart() {
        let c = LabeledCounter::default();
        c.inc(ZipDownloadResult::Ok);
        c.inc(ZipDownloadResult::Ok);
        c.inc(ZipDownloadResult::HttpError);
        assert_eq!(
            c.series(),
            vec![
                (vec!["http_error".to_string()], 1),
                (vec!["ok".to_string()], 2)
            ]
        );
    }
}
