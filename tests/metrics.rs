//! Observability end to end: the real binary, the real Debian adb server, simulated
//! phones (tests/support/adb_sim.py), and the real consumers of what we expose:
//! `promtool check metrics` and a real Prometheus server scraping us (both from the
//! Debian package `prometheus`), the kubelet's probes (/healthz, /readyz), and the log
//! at the default level, with the real bot (the stand-in bot and server of
//! tests/support) calling the hooks through bot_config.py.
//!
//! Not covered here: /healthz turning 503 in a real process. It needs the runtime thread
//! stopped while the status thread answers, and a signal stops the whole process. The
//! decision is `status_server::health` (unit-tested over the boundary) and the wiring
//! from `Shared` is unit-tested with a loop that really stops ticking
//! (`status_server::tests::healthz_of_a_shared_state_whose_loop_stopped_ticking`).

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::android::ADB;
use support::http::{get, request, try_request, wait_for_status};
use support::swarming::FakeSwarming;
use support::{free_port, output_of, wait_for, KillOnDrop, Monitor, OutputWithin, TempDir};
use support::{Tmm, EXIT_LIMIT};

const LONG: Duration = Duration::from_secs(40);
const PREFIX: &str = "test_machine_monitor_";

/// The real binary at the default log level (no `RUST_LOG`).
fn tmm(name: &str) -> Tmm {
    Tmm::new(&format!("metrics-{name}")).env_remove("RUST_LOG")
}

fn up(serial: &str) -> String {
    format!("device_up{{serial=\"{serial}\",kind=\"android\",device_type=\"redfin\"}}")
}

fn battery(serial: &str) -> String {
    format!("device_battery_percent{{serial=\"{serial}\"}}")
}

/// Three phones, one hot, all interrogated.
fn three_phones(name: &str) -> Monitor {
    let tmm = tmm(name)
        .plugged(&["modern:A", "modern:B", "hot:H"])
        .start();
    let sim = tmm.sim();
    tmm.wait_sample(&up(&sim.serial("A")), 1.0, LONG);
    tmm.wait_sample(&up(&sim.serial("B")), 1.0, LONG);
    tmm.wait_sample(&battery(&sim.serial("H")), 12.0, LONG);
    tmm.wait_sample("maintenance", 1.0, LONG);
    tmm
}

/// `promtool check metrics` on `text`: its exit status and everything it printed.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed: ci/deps installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = output_of(child, EXIT_LIMIT, "promtool check metrics");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

#[test]
fn promtool_finds_nothing_to_lint_in_the_real_exposition() {
    let tmm = three_phones("promtool");
    let sim = tmm.sim();
    // Give the labeled families series too: hook requests, one of them an error.
    for path in ["/get_settings", "/nope"] {
        get(tmm.hook_port, path);
    }
    let text = tmm.metrics();
    assert!(text.contains(&format!(
        "{PREFIX}hook_request_duration_seconds_bucket{{route=\"get_settings\",le=\"+Inf\"}} 1"
    )));
    assert!(text.contains(&format!(
        "{PREFIX}device_temperature_celsius{{serial=\"{}\",sensor=\"cpu0\"}} 44.5",
        sim.serial("H")
    )));
    // Any line promtool prints is a lint problem (wrong suffix, missing HELP, non-base
    // unit, ...) and fails the test: none is ignored.
    let (ok, printed) = promtool(&text);
    assert!(
        ok && printed.is_empty(),
        "promtool:\n{printed}\non:\n{text}"
    );

    // The check can fail: a counter without `_total` is reported.
    let (ok, printed) = promtool("# HELP x_count a\n# TYPE x_count counter\nx_count 1\n");
    assert!(
        !ok || !printed.is_empty(),
        "promtool accepted a bad counter"
    );
}

/// A real Prometheus server on loopback, with its data in a temp dir.
struct Prometheus {
    child: KillOnDrop,
    port: u16,
    log_path: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target_port: u16) -> Prometheus {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tmm\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let log_path = dir.join("prometheus.log");
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("Prometheus cannot start on this machine: {e}"));
        Prometheus {
            child: KillOnDrop(child),
            port,
            log_path,
        }
    }

    /// The result vector of an instant query, waiting until `accept` takes it. Fails
    /// with Prometheus's own log if it exits or never gives an acceptable answer.
    fn wait_query(
        &mut self,
        query: &str,
        accept: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!(
                    "Prometheus cannot start on this machine: it exited with {status}; its log:\n{}",
                    fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            let path = format!("/api/v1/query?query={query}");
            if let Some(body) = try_request(self.port, "GET", &path, b"")
                .ok()
                .filter(|r| r.status == 200)
                .map(|r| r.body)
            {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["status"], "success", "{body}");
                let result = v["data"]["result"].as_array().unwrap().clone();
                if accept(&result) {
                    return result;
                }
                last = body;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Prometheus never answered {query} as expected; last answer {last}; its log:\n{}",
                fs::read_to_string(&self.log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_real_prometheus_scrapes_us_and_sees_the_phones() {
    let tmm = three_phones("prometheus");
    let sim = tmm.sim();
    let dir = TempDir::new("prometheus");
    let mut prom = Prometheus::start(dir.path(), tmm.metrics_port);
    let instance = format!("127.0.0.1:{}", tmm.metrics_port);

    let value = |s: &serde_json::Value| s["value"][1].as_str().unwrap_or("").to_string();
    let up = prom.wait_query("up", |r| {
        r.iter()
            .any(|s| s["metric"]["instance"] == instance.as_str() && value(s) == "1")
    });
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["metric"]["job"], "tmm");

    let h = sim.serial("H");
    let name = format!("{PREFIX}device_battery_percent");
    let batteries = prom.wait_query(&name, |r| r.len() == 3);
    let hot = batteries
        .iter()
        .find(|s| s["metric"]["serial"] == h.as_str())
        .unwrap_or_else(|| panic!("no battery series for {h}: {batteries:?}"));
    assert_eq!(value(hot), "12");
    assert_eq!(hot["metric"]["instance"], instance.as_str());
}

#[test]
fn readyz_waits_for_the_first_round_while_healthz_is_alive() {
    // `--adb /bin/false`: our own adb server cannot start, so no round can finish
    // until an adb server appears on the port; the test starts one later.
    let tmm = tmm("readyz").phones().args(["--adb", "/bin/false"]).spawn();
    let adb_port = tmm.adb_port();
    wait_for_status(tmm.metrics_port, "/healthz", 200);
    // The status server is bound before the hook server, so the first reason may still
    // be the hooks' for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let ready = get(tmm.metrics_port, "/readyz");
        let (code, body) = (ready.status, ready.body);
        if body != "not ready: hook server not serving yet\n" || Instant::now() > deadline {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, 503, "{body}");
    assert_eq!(body, "not ready: first device interrogation not finished\n");
    // Not a timer: still not ready more than one interrogation period later.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(tmm.metrics_port, "/readyz").status, 503);
    assert_eq!(get(tmm.metrics_port, "/healthz").status, 200);

    let home = TempDir::new("readyz-adb");
    let adb = KillOnDrop(
        Command::new(ADB)
            .args(["-P", &adb_port.to_string(), "nodaemon", "server"])
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = wait_for_status(tmm.metrics_port, "/readyz", 200);
    assert_eq!(body, "ready\n");
    let health = get(tmm.metrics_port, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    tmm.wait_log("already listens", LONG);
    drop(tmm);
    drop(adb);
}

#[test]
fn the_default_log_shows_operator_events_not_hook_chatter_nor_the_token() {
    let tmm = tmm("log")
        .plugged(&["modern:A", "modern:H"])
        .bot(FakeSwarming::with_hooks())
        .args(["--bot-id", "pi-obs", "--grace", "5"])
        .start();
    let (sim, server) = (tmm.sim(), tmm.server());
    let (a, h) = (sim.serial("A"), sim.serial("H"));
    tmm.wait_sample(&up(&a), 1.0, LONG);
    tmm.wait_sample(&up(&h), 1.0, LONG);

    // The phone overheats, then cools down.
    sim.control("set H temp 44.5");
    let too_hot = format!("maintenance reason set: too hot: {h} cpu0 44.5°C (> 35°C)");
    tmm.wait_log(&too_hot, LONG);
    tmm.wait_sample("maintenance", 1.0, LONG);
    sim.control("set H temp 30");
    tmm.wait_log(
        &format!("maintenance reason cleared: too hot: {h} cpu0 44.5°C (> 35°C)"),
        LONG,
    );

    // The bot has run and called the hooks, the token one included.
    tmm.wait_log("started the bot (pid", LONG);
    wait_for(LONG, "the bot's hook calls", || {
        let auth =
            tmm.sample("hook_requests_total{route=\"get_authentication_headers\",code=\"200\"}")?;
        let state = tmm.sample("hook_requests_total{route=\"get_state\",code=\"200\"}")?;
        (auth >= 1.0 && state >= 2.0).then_some(())
    });
    // A hook error is one warn line.
    let reply = request(tmm.hook_port, "POST", "/get_state", "{not json");
    assert_eq!(reply.status, 400);
    tmm.wait_log("WARN  serve::hook_server: hook POST /get_state: 400", LONG);

    let token = server.state()["token"].as_str().unwrap().to_string();
    assert!(token.len() > 16);
    let log = tmm.log();
    let lines: Vec<&str> = log.lines().collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        has(&format!("INFO  devices::watcher: device {a} appeared: ")),
        "{log}"
    );
    assert!(
        has(&format!("INFO  devices::watcher: device {h} appeared: ")),
        "{log}"
    );
    assert!(has(&format!("INFO  devices::watcher: {too_hot}")), "{log}");
    assert!(has("INFO  bot::token_fetch: "), "{log}");
    for line in &lines {
        assert!(!line.contains(&token), "the token is in the log: {line}");
        assert!(
            !line.contains(" DEBUG "),
            "debug line at the default level: {line}"
        );
        // A successful hook request is per-request chatter: debug, so absent here.
        if line.contains("hooks: hook ") {
            assert!(
                line.contains("WARN  serve::hook_server: hook POST /get_state: 400"),
                "{line}"
            );
        }
    }
}

/// The metric names a PromQL text (or a Grafana `label_values(...)` query) asks for:
/// every `test_machine_monitor_*` word.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("test_machine_monitor_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The fleet dashboard and the alert rules ask only for metrics the binary exports (a
/// real scrape with simulated phones), and every expression parses (through promtool,
/// as recording rules, with the dashboard's variables filled in).
#[test]
fn the_dashboard_and_the_alert_rules_ask_only_for_what_the_binary_exports() {
    let tmm = three_phones("dashboard");
    let text = tmm.metrics();
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            exported.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let dash: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(format!("{root}/manifests/monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let queries: Vec<String> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["query"].as_str())
        .map(str::to_string)
        .collect();
    let alerts = fs::read_to_string(format!("{root}/manifests/monitoring/alerts.yaml")).unwrap();
    let mut asked = Vec::new();
    for text in exprs.iter().chain(&queries).chain(std::iter::once(&alerts)) {
        asked.extend(metric_names(text));
    }
    assert!(asked.len() > 20, "{asked:?}");
    for name in &asked {
        assert!(
            exported.contains(name),
            "{name} is not exported; the binary exports {exported:?}"
        );
    }
    for family in [
        "device_verdict",
        "device_battery_percent",
        "device_temperature_celsius",
        "bot_up",
        "hook_request_duration_seconds_bucket",
        "interrogation_duration_seconds_bucket",
        "adb_server_restarts_total",
    ] {
        let name = format!("test_machine_monitor_{family}");
        assert!(asked.contains(&name), "the dashboard shows no {name}");
    }

    // YAML is a superset of JSON: the rules file is written as JSON.
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$node", ".*")
                .replace("$serial", ".*");
            serde_json::json!({"record": format!("dashboard:panel_expr_{i}"), "expr": e})
        })
        .collect();
    let dir = TempDir::new("dashboard-rules");
    let file = dir.path().join("dashboard_rules.yaml");
    fs::write(
        &file,
        serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = Command::new("/usr/bin/promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output_within(EXIT_LIMIT);
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
