//! One row per exported family: its name, type, label names and help. The exposition
//! walks these rows in order, and a test holds docs/observability.md's table to them.

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// What the exposition declares of a family.
#[derive(Debug)]
pub struct Row {
    /// Without the `test_machine_monitor_` prefix.
    pub name: &'static str,
    pub kind: MetricType,
    /// In the order the samples give their values.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

macro_rules! families {
    ($($id:ident: $name:literal $kind:ident [$($label:literal),*] $help:literal;)+) => {
        /// Every exported family.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Family {
            $($id,)+
        }

        /// Indexed by `Family as usize`, which the macro keeps in step.
        const ROWS: &[Row] = &[
            $(Row { name: $name, kind: MetricType::$kind, labels: &[$($label),*], help: $help },)+
        ];

        impl Family {
            /// In the order of the exposition.
            pub const ALL: &'static [Family] = &[$(Family::$id,)+];

            pub fn row(self) -> &'static Row {
                &ROWS[self as usize]
            }
        }
    };
}

families! {
    BuildInfo: "build_info" Gauge ["version", "commit"]
        "Version and git commit of the running binary; always 1.";
    BotUp: "bot_up" Gauge ["bot"]
        "1 while the Swarming bot process is running.";
    BotRestartsTotal: "bot_restarts_total" Counter ["bot"]
        "Times the Swarming bot was started again after it exited.";
    BotLastExitCode: "bot_last_exit_code" Gauge ["bot"]
        "Exit code of the last bot exit, or 128+signal; 0 before any exit.";
    BotCrashloop: "bot_crashloop" Gauge ["bot"]
        "1 while the bot is crash-looping (five exits within a minute).";
    BotSilenceKillsTotal: "bot_silence_kills_total" Counter ["bot"]
        "Times the bot was killed, to be started again, for calling no hook for --bot-silence-limit outside a task.";
    BotDraining: "bot_draining" Gauge ["bot"]
        "1 while the bot drains for shutdown: told to stop while running a task, it is given --drain-limit to finish it.";
    BotZipDownloadsTotal: "bot_zip_downloads_total" Counter ["result"]
        "Downloads of swarming_bot.zip, by result.";
    TokenFetchesTotal: "token_fetches_total" Counter ["result"]
        "OAuth token fetches, by result.";
    HookRequestsTotal: "hook_requests_total" Counter ["route", "code"]
        "Hook requests, by route and HTTP status code.";
    HookRequestDurationSeconds: "hook_request_duration_seconds" Histogram ["route"]
        "Time to answer a hook request, by route.";
    DeviceUp: "device_up" Gauge ["serial", "kind", "device_type"]
        "1 when the device is online and has no fault of its own (bot-wide \
         maintenance, such as too hot, is test_machine_monitor_maintenance), else 0.";
    DeviceBot: "device_bot" Gauge ["serial", "bot"]
        "1 for each phone and the bot that serves it (the Pi's one bot with --bots one); 0, with bot \"\", for a phone refused a bot (the log and `devices` say why).";
    DeviceState: "device_state" Gauge ["serial", "state"]
        "1 for the state the device is in, 0 for the others.";
    DeviceVerdict: "device_verdict" Gauge ["serial", "verdict"]
        "1 for the device's verdict (usable, maintenance or quarantined), 0 for the others.";
    DeviceVerdictSeconds: "device_verdict_seconds" Gauge ["serial"]
        "How long the device has had its current verdict.";
    DeviceRecoveryStep: "device_recovery_step" Gauge ["serial"]
        "The recovery step a failing device is at (its consecutive failed rounds), 0 when it answers.";
    DeviceDataFreeBytes: "device_data_free_bytes" Gauge ["serial"]
        "Free space of the device's /data partition.";
    DeviceBatteryPercent: "device_battery_percent" Gauge ["serial"]
        "Battery charge of the device, 0 to 100.";
    DeviceTemperatureCelsius: "device_temperature_celsius" Gauge ["serial", "sensor"]
        "Temperature of each sensor of the device.";
    DeviceUptimeSeconds: "device_uptime_seconds" Gauge ["serial"]
        "Time since the device booted.";
    MaxTemperatureCelsius: "max_temperature_celsius" Gauge []
        "--max-temperature: a sensor above it puts its phone in maintenance.";
    MinBatteryPercent: "min_battery_percent" Gauge []
        "--min-battery: a battery below it puts its phone in maintenance.";
    Quarantined: "quarantined" Gauge []
        "1 while the phones give a quarantine reason that needs a person.";
    Maintenance: "maintenance" Gauge []
        "1 while the phones give a maintenance reason that clears by itself.";
    InterrogationDurationSeconds: "interrogation_duration_seconds" Histogram []
        "Time taken by a device interrogation round.";
    InterrogationErrorsTotal: "interrogation_errors_total" Counter ["kind"]
        "Failed device queries, by kind.";
    AdbServerRestartsTotal: "adb_server_restarts_total" Counter []
        "Times the adb server child was started again.";
    MaintenanceNote: "maintenance_note" Gauge ["serial"]
        "1 for each operator's maintenance note in force (the node's annotations); serial \"\" for the whole Pi's.";
    KubernetesErrorsTotal: "kubernetes_errors_total" Counter ["kind"]
        "Failures of the Kubernetes client, by kind.";
    KubernetesEventsTotal: "kubernetes_events_total" Counter ["result"]
        "Node events, by what became of them.";
    ProcessResidentMemoryBytes: "process_resident_memory_bytes" Gauge []
        "Resident memory of this process, from /proc/self/statm.";
}

#[cfg(test)]
mod tests {
    use super::super::labels::{
        InterrogationErrorKind, KubeErrorLabel, KubeEventResult, TokenFetchResult,
        ZipDownloadResult,
    };
    use super::*;
    use std::collections::BTreeMap;

    /// One row of docs/observability.md's table of families.
    #[derive(Debug, PartialEq)]
    struct DocRow {
        kind: String,
        labels: Vec<String>,
        meaning: String,
    }

    fn doc_rows() -> BTreeMap<String, DocRow> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/observability.md");
        let doc = std::fs::read_to_string(path).expect("docs/observability.md");
        let table = doc
            .split("| family | type | labels | meaning |\n|---|---|---|---|\n")
            .nth(1)
            .expect("the table of families in docs/observability.md");
        let unquote = |s: &str| s.trim().trim_matches('`').to_string();
        let mut rows = BTreeMap::new();
        for line in table.lines().take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
            let [name, kind, labels, meaning] = cells[..] else {
                panic!("not four cells: {line}");
            };
            let row = DocRow {
                kind: kind.trim().to_string(),
                labels: labels
                    .split(',')
                    .map(unquote)
                    .filter(|l| !l.is_empty())
                    .collect(),
                meaning: meaning.trim().to_string(),
            };
            assert!(
                rows.insert(unquote(name), row).is_none(),
                "documented twice: {line}"
            );
        }
        rows
    }

    #[test]
    fn the_doc_table_documents_every_family_with_its_type_and_labels() {
        let mut doc = doc_rows();
        for family in Family::ALL {
            let row = family.row();
            let documented = doc
                .remove(row.name)
                .unwrap_or_else(|| panic!("{} is exported but not documented", row.name));
            assert_eq!(documented.kind, row.kind.as_str(), "type of {}", row.name);
            assert_eq!(documented.labels, row.labels, "labels of {}", row.name);
        }
        let not_exported: Vec<&String> = doc.keys().collect();
        assert!(
            not_exported.is_empty(),
            "documented but not exported: {not_exported:?}"
        );
    }

    #[test]
    fn the_doc_table_lists_every_value_of_the_closed_labels_it_enumerates() {
        let doc = doc_rows();
        let enumerated: [(&str, Vec<&str>); 5] = [
            (
                "bot_zip_downloads_total",
                ZipDownloadResult::ALL.iter().map(|v| v.as_str()).collect(),
            ),
            (
                "token_fetches_total",
                TokenFetchResult::ALL.iter().map(|v| v.as_str()).collect(),
            ),
            (
                "interrogation_errors_total",
                InterrogationErrorKind::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect(),
            ),
            (
                "kubernetes_errors_total",
                KubeErrorLabel::ALL.iter().map(|v| v.as_str()).collect(),
            ),
            (
                "kubernetes_events_total",
                KubeEventResult::ALL.iter().map(|v| v.as_str()).collect(),
            ),
        ];
        for (name, values) in enumerated {
            let meaning = &doc[name].meaning;
            // The quoted words of the meaning, e.g. "failed device queries: `timeout`, ...".
            let mut got: Vec<&str> = meaning.split('`').skip(1).step_by(2).collect();
            got.sort_unstable();
            let mut want = values;
            want.sort_unstable();
            assert_eq!(got, want, "values of {name} in the doc: {meaning}");
        }
    }

    #[test]
    fn rows_are_in_the_order_of_their_families() {
        for (i, family) in Family::ALL.iter().enumerate() {
            assert_eq!(*family as usize, i);
        }
        assert_eq!(ROWS.len(), Family::ALL.len());
    }
}
