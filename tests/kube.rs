//! Operating the lab with kubectl, end to end: the real binary with simulated phones
//! and the real adb server, against the stand-in Kubernetes API server
//! (`tests/support/fake_kube.py`: HTTPS with its own CA, bearer tokens, the node and its
//! watch, the namespace's events). An annotation on the node is what `kubectl annotate
//! node` makes; the events posted are what `kubectl describe node` shows.

mod support;

use std::io::BufRead;
use std::time::Duration;

use serde_json::{json, Value};
use support::android::{reasons, up, usable, wait_reason, wait_rounds, UsbBus};
use support::http::get;
use support::kube::FakeKube;
use support::swarming::FakeSwarming;
use support::{wait_for, wait_showing, Monitor, Tmm};

const LONG: Duration = Duration::from_secs(30);
const PI: &str = "test-machine-monitor/maintenance";

/// The monitor in the stand-in's cluster, with the simulated phones `specs` plugged in.
/// Rounds every `interval` seconds: a long one shows that a note does not wait for a
/// round.
fn in_cluster(kube: &FakeKube, name: &str, interval: u32, specs: &[&str]) -> Monitor {
    let tmm = Tmm::new(name)
        .plugged(specs)
        .kube(kube)
        .args(["--interrogate-every", &interval.to_string()])
        .start();
    tmm.wait_log("kubernetes: watching node", LONG);
    tmm
}

fn phone_key(serial: &str) -> String {
    format!("{PI}.{}", serial.replace(':', "-"))
}

fn events_of(kube: &FakeKube, reason: &str) -> Vec<Value> {
    kube.events()
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

fn wait_event(kube: &FakeKube, reason: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_showing(
        LONG,
        &format!("a {reason} event"),
        || events_of(kube, reason).into_iter().find(|e| f(e)),
        || format!(": the events are {:#}", Value::from(kube.events())),
    )
}

fn verdict(serial: &str, verdict: &str) -> String {
    format!("device_verdict{{serial=\"{serial}\",verdict=\"{verdict}\"}}")
}

#[test]
fn a_note_on_the_node_reaches_get_state_without_a_round_and_clears() {
    let kube = FakeKube::start("kube-notes", "pi-rack-a-01");
    let tmm = in_cluster(&kube, "kube-notes", 600, &["modern:A", "modern:B"]);
    let sim = tmm.sim();
    let (a, b) = (sim.serial("A"), sim.serial("B"));
    tmm.wait_sample(&up(&a, "redfin"), 1.0, LONG);
    tmm.wait_sample(&up(&b, "redfin"), 1.0, LONG);
    let rounds = tmm.sample("interrogation_duration_seconds_count");

    // The whole Pi: the bot reports maintenance with the note.
    kube.annotate(PI, Some("new USB hub (ana)"));
    wait_reason(&tmm, "maintenance", "maintenance: new USB hub (ana)");
    assert_eq!(tmm.sample("maintenance_note{serial=\"\"}"), Some(1.0));
    assert_eq!(tmm.sample("maintenance"), Some(1.0));
    assert!(tmm.log_has("node pi-rack-a-01: maintenance notes now: Pi: new USB hub (ana)"));
    kube.annotate(PI, None);
    wait_for(LONG, "the Pi's note to clear", || {
        reasons(&tmm, "maintenance").is_empty().then_some(())
    });
    assert_eq!(tmm.sample("maintenance_note{serial=\"\"}"), None);

    // A note too long is cut, said once with its key, and still in force.
    kube.annotate(PI, Some(&"x".repeat(300)));
    wait_reason(
        &tmm,
        "maintenance",
        &format!("maintenance: {}…", "x".repeat(200)),
    );
    tmm.wait_log(
        "node pi-rack-a-01: annotation test-machine-monitor/maintenance: 300 characters, at most 200: cut; shorten it",
        LONG,
    );
    assert_eq!(
        tmm.sample("kubernetes_errors_total{kind=\"bad_annotation\"}"),
        Some(1.0)
    );
    kube.annotate(PI, None);
    wait_for(LONG, "the long note to clear", || {
        reasons(&tmm, "maintenance").is_empty().then_some(())
    });

    // One phone: that phone alone is in maintenance, with the note as its reason.
    kube.annotate(&phone_key(&a), Some("cracked screen"));
    let r = wait_reason(
        &tmm,
        "maintenance",
        &format!("maintenance: {a}: cracked screen"),
    );
    assert!(!r.contains(&b), "{r}");
    tmm.wait_sample(&verdict(&a, "maintenance"), 1.0, LONG);
    assert_eq!(tmm.sample(&verdict(&b, "usable")), Some(1.0));
    let reply = get(tmm.metrics_port, "/status.json");
    assert_eq!(reply.status, 200);
    let status = reply.body;
    assert!(status.contains("cracked screen"), "{status}");
    let devices = tmm.devices_command();
    let listing = String::from_utf8_lossy(&devices.stdout);
    assert!(listing.contains("cracked screen"), "{listing}");
    // Its story is on the node.
    let e = wait_event(&kube, "PhoneMaintenance", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("cracked screen"))
    });
    assert_eq!(e["involvedObject"]["kind"], "Node");
    assert_eq!(e["involvedObject"]["name"], "pi-rack-a-01");
    assert_eq!(
        e["message"],
        format!("phone {a} in maintenance: maintenance: {a}: cracked screen")
    );
    kube.annotate(&phone_key(&a), None);
    tmm.wait_sample(&verdict(&a, "usable"), 1.0, LONG);
    wait_event(&kube, "PhoneUsable", |e| {
        e["message"] == format!("phone {a} usable again")
    });
    // None of this waited for a round.
    assert_eq!(tmm.sample("interrogation_duration_seconds_count"), rounds);
}

#[test]
fn a_phone_that_heats_up_is_one_event_whose_repeats_patch_its_count() {
    let kube = FakeKube::start("kube-heat", "pi-rack-a-02");
    let tmm = in_cluster(&kube, "kube-heat", 2, &["modern:T"]);
    let sim = tmm.sim();
    let t = usable(&tmm, "T", "redfin");
    let hot = format!("too hot: {t} cpu0 44.5°C (> 35°C)");
    for time in 1..=2 {
        assert_eq!(sim.control("set T temp 44.5"), "OK");
        // The message is the log line, with every reason of the phone.
        let e = wait_event(&kube, "PhoneMaintenance", |e| e["count"] == time);
        let message = e["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("phone {t} in maintenance: ")) && message.contains(&hot),
            "{message}"
        );
        assert!(tmm.log_has(message));
        assert_eq!(sim.control("set T temp 32"), "OK");
        wait_event(&kube, "PhoneUsable", |e| e["count"] == time);
    }
    // One object each, its count patched, its type and source as the kubelet's.
    let heat = events_of(&kube, "PhoneMaintenance");
    assert_eq!(heat.len(), 1, "{heat:?}");
    assert_eq!(heat[0]["type"], "Normal");
    assert_eq!(heat[0]["source"]["component"], "test-machine-monitor");
    assert_eq!(events_of(&kube, "PhoneUsable").len(), 1);
    assert!(kube.state()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r[0] == "PATCH" && r[2] == 200));
    assert_eq!(
        tmm.sample("kubernetes_events_total{result=\"patched\"}"),
        Some(2.0)
    );
}

#[test]
fn each_ladder_step_and_the_quarantine_are_events_on_the_node() {
    let kube = FakeKube::start("kube-ladder", "pi-rack-a-08");
    let tmm = in_cluster(&kube, "kube-ladder", 2, &["offline:O"]);
    let sim = tmm.sim();
    let o = sim.serial("O");
    // Play the USB bus, as tests/android.rs does: keep connecting the offline phone.
    let bus = UsbBus::start(tmm.adb_port(), sim.port("O"));
    // (A TCP transport that is reset leaves the list a moment: it may be quarantined
    // as gone missing before; the events say that too.)
    let still =
        format!("phone {o} quarantined: device {o} is still offline after every recovery step");
    let q = wait_event(&kube, "PhoneQuarantined", |e| {
        e["message"].as_str().is_some_and(|m| m.starts_with(&still))
    });
    drop(bus);
    assert_eq!(q["type"], "Warning");
    assert!(tmm.log_has(q["message"].as_str().unwrap()));
    let steps: Vec<String> = events_of(&kube, "RecoveryStep")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        steps.contains(&format!(
            "phone {o} recovery step 2: device {o} offline, recovering: step 2, reconnect {o}"
        )),
        "{steps:?}"
    );
    for step in &steps {
        assert!(tmm.log_has(step), "{step} is not the log's line");
    }
}

#[test]
fn an_unreachable_api_keeps_the_last_notes_and_says_since_when() {
    let kube = FakeKube::start("kube-down", "pi-rack-a-03");
    let tmm = in_cluster(&kube, "kube-down", 2, &["modern:A"]);
    kube.annotate(PI, Some("rewiring"));
    wait_reason(&tmm, "maintenance", "maintenance: rewiring");
    kube.control(json!({"down": true}));
    tmm.wait_log(
        "keeping the last known maintenance notes (Pi: rewiring) since 20",
        LONG,
    );
    let line = tmm.log_line("keeping the last known").unwrap();
    assert!(
        line.contains("GET https://127.0.0.1:") || line.contains("the watch of node"),
        "{line}"
    );
    assert!(
        tmm.sample("kubernetes_errors_total{kind=\"unreachable\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    // The notes stay while it is down, round after round: no flapping.
    wait_rounds(&tmm, 2);
    assert!(reasons(&tmm, "maintenance").contains("maintenance: rewiring"));
    let status = get(tmm.metrics_port, "/status.json").body;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["kubernetes"]["unreachable_since"].is_number(),
        "{status}"
    );
    // One line per outage, however many retries.
    assert_eq!(tmm.log_count("keeping the last known"), 1);
    kube.control(json!({"down": false}));
    tmm.wait_log("answers again after", LONG);
    kube.annotate(PI, None);
    wait_for(LONG, "the note to clear", || {
        reasons(&tmm, "maintenance").is_empty().then_some(())
    });
}

#[test]
fn a_403_names_the_permission_and_the_manifest_and_keeps_the_notes() {
    let kube = FakeKube::start("kube-403", "pi-rack-a-04");
    kube.control(json!({"forbid": ["create events"]}));
    let tmm = in_cluster(&kube, "kube-403", 2, &["modern:A"]);
    let a = usable(&tmm, "A", "redfin");
    kube.annotate(&phone_key(&a), Some("battery swap"));
    wait_reason(&tmm, "maintenance", "battery swap");
    tmm.wait_log(
        "cannot post node event PhoneMaintenance (POST https://127.0.0.1:",
        LONG,
    );
    let line = tmm.log_line("cannot post node event").unwrap();
    assert!(
        line.contains("lacks \"create\" on events (granted by manifests/base/rbac.yaml)"),
        "{line}"
    );
    assert!(
        line.contains("cannot create resource \\\"events\\\"")
            || line.contains("cannot create resource \"events\""),
        "{line}"
    );
    // Now the watch is refused too: said once, the note kept.
    kube.control(json!({"forbid": ["watch nodes"], "end_watches": true}));
    tmm.wait_log(
        "lacks \"watch\" on nodes (granted by manifests/base/rbac.yaml)",
        LONG,
    );
    assert!(
        tmm.sample("kubernetes_errors_total{kind=\"forbidden\"}")
            .unwrap_or(0.0)
            >= 2.0
    );
    wait_rounds(&tmm, 2);
    assert!(reasons(&tmm, "maintenance").contains("battery swap"));
    assert_eq!(tmm.sample(&verdict(&a, "maintenance")), Some(1.0));
}

#[test]
fn a_rotated_token_is_read_again_after_a_401_and_a_watch_that_ends_is_renewed() {
    let kube = FakeKube::start("kube-token", "pi-rack-a-05");
    let tmm = in_cluster(&kube, "kube-token", 2, &["modern:A"]);
    wait_for(LONG, "the watch", || {
        (kube.state()["watches_opened"].as_u64() >= Some(1)).then_some(())
    });
    // The projected token rotates and the old one expires: the next watch gets a 401,
    // reads the file again and goes on without a word.
    kube.control(json!({"rotate_token": true, "end_watches": true}));
    wait_for(LONG, "a 401 and a new watch", || {
        (kube.answered(401) >= 1 && kube.state()["watches_opened"].as_u64() >= Some(2))
            .then_some(())
    });
    kube.annotate(PI, Some("after rotation"));
    wait_reason(&tmm, "maintenance", "maintenance: after rotation");
    assert_eq!(
        tmm.sample("kubernetes_errors_total{kind=\"unauthorized\"}"),
        None
    );
    assert!(!tmm.log_has("Unauthorized"));

    // Too old a version to watch from (410 Gone): the node is read again.
    kube.control(json!({"compact": true, "end_watches": true}));
    tmm.wait_log("is too old (410 Gone): reading the node again", LONG);
    kube.annotate(PI, None);
    wait_for(LONG, "the note to clear", || {
        reasons(&tmm, "maintenance").is_empty().then_some(())
    });
    assert!(!tmm.log_has("keeping the last known"));
}

#[test]
fn a_stalled_api_server_is_one_line_and_the_notes_stay() {
    let kube = FakeKube::start("kube-stall", "pi-rack-a-07");
    // Without phones, the Pi's note still reaches get_state.
    let tmm = Tmm::new("kube-stall").kube(&kube).start();
    tmm.wait_log("kubernetes: watching node", LONG);
    kube.annotate(PI, Some("moving racks"));
    wait_reason(&tmm, "maintenance", "maintenance: moving racks");
    // The server accepts the next watch and never answers it.
    kube.control(json!({"stall": true, "end_watches": true}));
    tmm.wait_log(
        "keeping the last known maintenance notes (Pi: moving racks) since",
        LONG,
    );
    let line = tmm.log_line("keeping the last known").unwrap();
    assert!(line.contains("no answer"), "{line}");
    assert!(reasons(&tmm, "maintenance").contains("maintenance: moving racks"));
    kube.control(json!({"stall": false}));
    tmm.wait_log("answers again after", Duration::from_secs(90));
}

#[test]
fn the_drain_is_an_event_on_the_node_posted_before_the_exit() {
    let kube = FakeKube::start("kube-drain", "pi-rack-a-09");
    let tmm = in_cluster(&kube, "kube-drain", 2, &["modern:A"]);
    // The node has been read (its uid is what the events carry).
    wait_for(LONG, "the watch", || {
        (kube.state()["watches_opened"].as_u64() >= Some(1)).then_some(())
    });
    tmm.term();
    tmm.wait_log("app: stopped", LONG);
    // Posted before the exit: the event is there as soon as the process is done.
    let drained = events_of(&kube, "Draining");
    assert_eq!(drained.len(), 1, "{:?}", kube.events());
    let e = &drained[0];
    let message = e["message"].as_str().unwrap();
    assert!(message.starts_with("draining for shutdown: "), "{message}");
    assert!(tmm.log_has(message));
}

#[test]
fn a_crash_looping_bot_is_a_warning_on_the_node() {
    let kube = FakeKube::start("kube-crash", "pi-rack-a-10");
    let tmm = Tmm::new("kube-crash")
        .bot(FakeSwarming::start(&[]))
        .env("FAKE_BOT_CRASH", "3")
        .kube(&kube)
        .start();
    // Five exits within the window, after restarts of 1, 2, 4 and 8 s (jittered).
    let e = wait_showing(
        Duration::from_secs(90),
        "a BotCrashLoop event",
        || events_of(&kube, "BotCrashLoop").into_iter().next(),
        || format!(": the events are {:#}", Value::from(kube.events())),
    );
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("bot is crash-looping: 5 exits within")
            && message.contains("exit code 3"),
        "{message}"
    );
    assert!(tmm.log_has(message), "the event is not the log's line");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["involvedObject"]["kind"], "Node");
    assert_eq!(e["involvedObject"]["name"], "pi-rack-a-10");
}

#[test]
fn without_a_cluster_one_line_says_so() {
    let tmm = Tmm::new("kube-off").phones().start();
    tmm.wait_log(
        "kubernetes: off (not in a cluster: KUBERNETES_SERVICE_HOST is not set)",
        LONG,
    );
    drop(tmm);
    let kube = FakeKube::start("kube-off-flag", "pi-rack-a-06");
    let tmm = Tmm::new("kube-off-flag")
        .phones()
        .kube(&kube)
        .args(["--kubernetes", "off"])
        .start();
    tmm.wait_log("kubernetes: off (--kubernetes off)", LONG);
    assert_eq!(kube.state()["requests"].as_array().unwrap().len(), 0);
}

/// An agent that trusts only the stand-in's CA, as the monitor's does.
fn agent(kube: &FakeKube, trust_its_ca: bool) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    // Without its CA: trusting nothing, as a client given the wrong CA.
    let mut roots = RootCerts::new_with_certs(&[]);
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)));
    if trust_its_ca {
        let pem = std::fs::read(kube.sa_dir().join("ca.crt")).unwrap();
        let ca = Certificate::from_pem(&pem).unwrap();
        roots = RootCerts::new_with_certs(&[ca]);
    }
    // The crate's ureq has no provider of its own: the test gives rustls's.
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .build();
    config.tls_config(tls).build().into()
}

#[test]
fn the_stand_in_demands_what_the_api_server_demands() {
    let kube = FakeKube::start("kube-stand-in", "pi-x");
    let api = format!("https://127.0.0.1:{}", kube.port);
    let bearer = format!("Bearer {}", kube.token());
    // Its certificate is signed by the CA it made: a client without that CA fails.
    assert!(agent(&kube, false)
        .get(format!("{api}/api/v1/nodes/pi-x"))
        .call()
        .is_err());
    let http = agent(&kube, true);
    let get = |path: &str, auth: &str| {
        let mut r = http
            .get(format!("{api}{path}"))
            .header("Authorization", auth)
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(get("/api/v1/nodes/pi-x", "Bearer wrong").0, 401);
    let (code, node) = get("/api/v1/nodes/pi-x", &bearer);
    assert_eq!(code, 200);
    let node: Value = serde_json::from_str(&node).unwrap();
    let uid = node["metadata"]["uid"].as_str().unwrap().to_string();
    let rv = node["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get("/api/v1/nodes/other", &bearer).0, 404);

    // The watch streams changes after the version given, one JSON object a line.
    let mut watch = http
        .get(format!(
            "{api}/api/v1/nodes?fieldSelector=metadata.name%3Dpi-x&watch=true&resourceVersion={rv}&timeoutSeconds=30"
        ))
        .header("Authorization", &bearer)
        .call()
        .unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    kube.annotate(PI, Some("x"));
    let mut lines = std::io::BufReader::new(watch.body_mut().as_reader());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["metadata"]["annotations"][PI], "x");
    kube.control(json!({"compact": true}));
    let mut old = http
        .get(format!(
            "{api}/api/v1/nodes?fieldSelector=metadata.name%3Dpi-x&watch=true&resourceVersion={rv}"
        ))
        .header("Authorization", &bearer)
        .call()
        .unwrap();
    let gone: Value =
        serde_json::from_str(old.body_mut().read_to_string().unwrap().trim()).unwrap();
    assert_eq!(
        (gone["type"].as_str(), gone["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );

    // Events: JSON only, about this node, unique names; patches by merge.
    let events = format!("{api}/api/v1/namespaces/lab/events");
    let post = |body: &Value, ct: &str| {
        http.post(&events)
            .header("Authorization", &bearer)
            .header("Content-Type", ct)
            .send(body.to_string())
            .unwrap()
            .status()
            .as_u16()
    };
    let event = json!({
        "metadata": {"name": "pi-x.1"}, "reason": "PhoneUsable", "message": "m", "type": "Normal",
        "count": 1, "firstTimestamp": "2026-12-06T00:00:00Z", "lastTimestamp": "2026-12-06T00:00:00Z",
        "source": {"component": "c"}, "involvedObject": {"kind": "Node", "name": "pi-x", "uid": uid},
    });
    assert_eq!(post(&event, "text/plain"), 415);
    let mut stranger = event.clone();
    stranger["involvedObject"]["uid"] = json!("another");
    assert_eq!(post(&stranger, "application/json"), 422);
    assert_eq!(post(&event, "application/json"), 201);
    assert_eq!(post(&event, "application/json"), 409);
    let patch = |name: &str| {
        http.patch(format!("{events}/{name}"))
            .header("Authorization", &bearer)
            .header("Content-Type", "application/strategic-merge-patch+json")
            .send(r#"{"count": 2}"#)
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(patch("pi-x.1"), 200);
    assert_eq!(patch("pi-x.9"), 404);
    assert_eq!(kube.events()[0]["count"], 2);

    // RBAC refusals and token rotation.
    kube.control(json!({"forbid": ["get nodes"]}));
    let (code, body) = get("/api/v1/nodes/pi-x", &bearer);
    assert_eq!(code, 403);
    assert!(body.contains("cannot get resource \\\"nodes\\\""), "{body}");
    kube.control(json!({"forbid": [], "rotate_token": true}));
    assert_eq!(get("/api/v1/nodes/pi-x", &bearer).0, 401);
    assert_eq!(
        get("/api/v1/nodes/pi-x", &format!("Bearer {}", kube.token())).0,
        200
    );
}
