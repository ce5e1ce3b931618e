//! iPhones end to end: the real binary with `--devices ios` (and `android,ios` beside the
//! real Debian adb server and one simulated Android phone), reading stand-in
//! libimobiledevice tools (tests/support/ios.rs) from `--idevice-dir`. What it publishes
//! is read from `/metrics`, from the hooks (`/get_dimensions`, `/get_state`) and from
//! its log lines.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::android::{connect_phone, Sim};
use support::http::request;
use support::ios::{dead, Lab};
use support::{send_signal, wait_for, Monitor, Tmm};

const LONG: Duration = Duration::from_secs(30);
/// `--interrogate-every` for the iPhone-only monitors: each tool gets 1.5 s.
const INTERVAL: u32 = 4;

const A: &str = "00008030-001A2D3E0E38802E";
const B: &str = "00008101-000C19A82E10001E";
const C: &str = "abcdef0123456789abcdef0123456789abcdef01";

fn up(udid: &str, device_type: &str) -> String {
    format!("device_up{{serial=\"{udid}\",kind=\"ios\",device_type=\"{device_type}\"}}")
}

/// iPhones alone, from `lab`'s tools; the monitor is given an adb port it must not use.
fn ios_only(name: &str) -> Tmm {
    Tmm::new(name).phones().args([
        "--devices",
        "ios",
        "--interrogate-every",
        &INTERVAL.to_string(),
    ])
}

/// `/get_state`'s entry for `serial`, if listed.
fn device(state: &Value, serial: &str) -> Option<Value> {
    state["devices"]
        .as_array()?
        .iter()
        .find(|d| d["serial"] == serial)
        .cloned()
}

/// `/get_state`'s `quarantined` or `maintenance` text ("" when unset).
fn reasons(state: &Value, kind: &str) -> String {
    state[kind].as_str().unwrap_or_default().to_string()
}

/// Polls `/get_state` until `f` holds; returns that state.
fn wait_state(tmm: &Monitor, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(LONG, what, || {
        let s = tmm.hook("/get_state");
        f(&s).then_some(s)
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn several_iphones_low_battery_and_one_gone_missing() {
    let lab = Lab::new("several");
    lab.phones(&[A, B, C]);
    lab.phone(A, "iPhone14,2", "17.1", "87");
    lab.phone(B, "iPhone13,1", "16.6.1", "12");
    lab.phone(C, "iPhone10,4", "15.7", "55");
    let tmm = ios_only("ios-several").iphones(&lab).start();

    tmm.wait_sample(&up(A, "iPhone14,2"), 1.0, LONG);
    tmm.wait_sample(&up(B, "iPhone13,1"), 1.0, LONG);
    tmm.wait_sample(&up(C, "iPhone10,4"), 1.0, LONG);
    assert_eq!(
        tmm.sample(&format!("device_battery_percent{{serial=\"{B}\"}}")),
        Some(12.0)
    );
    // A low battery: maintenance, as for Android.
    tmm.wait_sample("maintenance", 1.0, LONG);
    tmm.wait_log(
        &format!("maintenance reason set: battery low: {B} 12% (< 30%)"),
        LONG,
    );
    assert_eq!(tmm.sample("quarantined"), Some(0.0));

    let dims = tmm.hook("/get_dimensions");
    assert_eq!(
        strings(&dims["os"]),
        ["iOS", "iOS-15.7", "iOS-16.6.1", "iOS-17.1"]
    );
    assert_eq!(
        strings(&dims["device_type"]),
        ["iPhone10,4", "iPhone13,1", "iPhone14,2"]
    );
    assert_eq!(strings(&dims["ios_devices"]), ["3"]);
    assert!(dims.get("android_devices").is_none(), "{dims}");

    // No Android: no adb server was started, and none was contacted.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", tmm.adb_port())).is_err(),
        "something listens on the adb port"
    );
    for pid in tmm.children() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(comm.trim(), "adb", "an adb child: {pid}");
    }
    assert!(!tmm.log_has("adb server"), "the adb server was mentioned");

    // C is unplugged: quarantined as gone missing, shown as missing with its type.
    lab.phones(&[A, B]);
    tmm.wait_sample(
        &format!("device_state{{serial=\"{C}\",state=\"missing\"}}"),
        1.0,
        LONG,
    );
    tmm.wait_sample("quarantined", 1.0, LONG);
    let state = tmm.hook("/get_state");
    assert_eq!(
        reasons(&state, "quarantined"),
        format!("device {C} (iPhone10,4) has gone missing")
    );
    assert_eq!(
        reasons(&state, "maintenance"),
        format!("battery low: {B} 12% (< 30%)")
    );
    let c = device(&state, C).unwrap();
    assert_eq!(c["kind"], "ios");
    assert_eq!(c["state"], "missing");
    assert_eq!(c["device_type"], "iPhone10,4");
    let dims = tmm.hook("/get_dimensions");
    assert_eq!(strings(&dims["ios_devices"]), ["2"]);

    // Plugged back and charged: every reason clears.
    lab.phones(&[A, B, C]);
    lab.phone(B, "iPhone13,1", "16.6.1", "90");
    tmm.wait_sample("quarantined", 0.0, LONG);
    tmm.wait_sample("maintenance", 0.0, LONG);
    tmm.wait_sample(&up(C, "iPhone10,4"), 1.0, LONG);
}

#[test]
fn a_hung_tool_costs_only_its_phone_and_a_hung_listing_keeps_the_phones() {
    let lab = Lab::new("hang");
    lab.phones(&[A, B]);
    lab.phone(A, "iPhone14,2", "17.1", "87");
    lab.phone(B, "iPhone13,1", "16.6.1", "90");
    let tmm = ios_only("ios-hang").iphones(&lab).start();
    tmm.wait_sample(&up(A, "iPhone14,2"), 1.0, LONG);
    tmm.wait_sample(&up(B, "iPhone13,1"), 1.0, LONG);

    // A's ideviceinfo hangs: A says why; B is still read (its new battery shows).
    lab.mark(A, "hang");
    let state = wait_state(&tmm, "A's timeout", |s| {
        device(s, A).is_some_and(|a| {
            a["unusable"]
                .as_str()
                .is_some_and(|u| u.contains("no answer within 1.5s"))
        })
    });
    let a = device(&state, A).unwrap();
    assert!(
        a["unusable"]
            .as_str()
            .unwrap()
            .starts_with(&format!("not answering: iPhone {A}: ideviceinfo -k ")),
        "{a}"
    );
    // A phone that does not answer is never silently unusable: it has its own reason.
    let why = a["reasons"]["maintenance"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.starts_with(&format!("device {A} not answering (")),
        "{a}"
    );
    lab.phone(B, "iPhone13,1", "16.6.1", "10");
    tmm.wait_sample(
        &format!("device_battery_percent{{serial=\"{B}\"}}"),
        10.0,
        LONG,
    );
    tmm.wait_sample(&up(B, "iPhone13,1"), 1.0, LONG);
    // Its type is unknown too: the hung tool is the one that says it.
    tmm.wait_sample(&up(A, ""), 0.0, LONG);
    let timeouts = tmm
        .sample("interrogation_errors_total{kind=\"timeout\"}")
        .unwrap_or(0.0);
    assert!(timeouts >= 3.0, "{timeouts}");
    // Still not answering after the rounds the rules allow: quarantined, with A's name.
    let state = wait_state(&tmm, "A quarantined", |s| {
        reasons(s, "quarantined").contains(&format!("device {A} has not answered for 2 rounds"))
    });
    assert!(!reasons(&state, "quarantined").contains(B), "{state}");

    // The listing itself hangs: a maintenance reason, and the phones stay (unusable),
    // not gone missing.
    lab.write("list-hangs", "");
    let state = wait_state(&tmm, "the listing's timeout", |s| {
        reasons(s, "maintenance").contains("cannot list the iPhones: idevice_id -l: no answer")
    });
    assert_eq!(reasons(&state, "quarantined"), "", "{state}");
    let b = device(&state, B).unwrap();
    assert!(
        b["unusable"]
            .as_str()
            .is_some_and(|u| u.starts_with("cannot list the iPhones")),
        "{b}"
    );
    assert!(tmm.hook("/get_dimensions").get("ios_devices").is_none());

    // Everything answers again: all clear, and no hung tool is left behind.
    std::fs::remove_file(lab.dir.join("list-hangs")).unwrap();
    std::fs::remove_file(lab.dir.join(format!("{A}.hang"))).unwrap();
    lab.phone(B, "iPhone13,1", "16.6.1", "90");
    tmm.wait_sample(&up(A, "iPhone14,2"), 1.0, LONG);
    tmm.wait_sample(&up(B, "iPhone13,1"), 1.0, LONG);
    tmm.wait_sample("maintenance", 0.0, LONG);
    let sleepers = lab.sleepers();
    assert!(sleepers.len() >= 4, "{sleepers:?}");
    wait_for(LONG, "the hung tools to be killed", || {
        sleepers.iter().all(|p| dead(*p)).then_some(())
    });
}

#[test]
fn a_missing_tool_or_usbmuxd_quarantines_with_a_clear_reason_and_keeps_the_phones() {
    let lab = Lab::new("notool");
    lab.phones(&[A]);
    lab.phone(A, "iPhone14,2", "17.1", "87");
    let tmm = ios_only("ios-notool").iphones(&lab).start();
    tmm.wait_sample(&up(A, "iPhone14,2"), 1.0, LONG);

    let tool = lab.dir.join("idevice_id");
    let aside = lab.dir.join("idevice_id.aside");
    std::fs::rename(&tool, &aside).unwrap();
    tmm.wait_sample("quarantined", 1.0, LONG);
    let state = tmm.hook("/get_state");
    let why = format!(
        "cannot list the iPhones: idevice_id -l: idevice_id not found at {} (install libimobiledevice-utils, or point --idevice-dir at the directory that holds it)",
        tool.display()
    );
    assert_eq!(reasons(&state, "quarantined"), why);
    let a = device(&state, A).unwrap();
    assert_eq!(a["unusable"].as_str(), Some(why.as_str()));
    assert_eq!(a["device_type"], "iPhone14,2");
    assert_eq!(tmm.sample(&up(A, "iPhone14,2")), Some(0.0));
    assert!(
        tmm.sample("interrogation_errors_total{kind=\"ios_tool\"}")
            .unwrap_or(0.0)
            >= 1.0
    );

    std::fs::rename(&aside, &tool).unwrap();
    tmm.wait_sample("quarantined", 0.0, LONG);
    tmm.wait_sample(&up(A, "iPhone14,2"), 1.0, LONG);

    lab.write("usbmuxd-down", "");
    let state = wait_state(&tmm, "the usbmuxd reason", |s| {
        !reasons(s, "quarantined").is_empty()
    });
    assert_eq!(
        reasons(&state, "quarantined"),
        "cannot list the iPhones: idevice_id -l: failed with exit code 255: ERROR: Unable to retrieve device list! (is usbmuxd running on the host or in the pod?)"
    );
    assert!(device(&state, A).is_some());
    std::fs::remove_file(lab.dir.join("usbmuxd-down")).unwrap();
    tmm.wait_sample("quarantined", 0.0, LONG);
    // Never taken for "no phone": A was not reported gone missing at any time.
    assert!(!tmm.log_has("has gone missing"));
}

#[test]
fn after_a_task_the_iphones_restart_and_come_back() {
    let lab = Lab::new("reboot");
    lab.phones(&[A, B]);
    lab.phone(A, "iPhone14,2", "17.1", "87");
    lab.phone(B, "iPhone13,1", "16.6.1", "90");
    let tmm = ios_only("ios-reboot").iphones(&lab).start();
    tmm.wait_sample(&up(A, "iPhone14,2"), 1.0, LONG);
    tmm.wait_sample(&up(B, "iPhone13,1"), 1.0, LONG);

    let reply = request(tmm.hook_port, "GET", "/on_after_task", "");
    assert_eq!(reply.status, 200, "{}", reply.body);

    let rebooting = |udid: &str| format!("rebooting {udid} after task");
    let state = wait_state(&tmm, "the rebooting reasons", |s| {
        let m = reasons(s, "maintenance");
        m.contains(&rebooting(A)) && m.contains(&rebooting(B))
    });
    let a = device(&state, A).unwrap();
    assert_eq!(a["state"], "rebooting");
    assert_eq!(a["unusable"], "rebooting after task");
    assert_eq!(
        reasons(&state, "quarantined"),
        "",
        "gone missing while rebooting?"
    );

    let state = wait_state(&tmm, "the iPhones back", |s| {
        reasons(s, "maintenance").is_empty()
            && [A, B]
                .iter()
                .all(|u| device(s, u).is_some_and(|d| d["unusable"].is_null()))
    });
    assert_eq!(device(&state, A).unwrap()["state"], "device");
    tmm.wait_log(&format!("iPhone {A} is restarting"), LONG);
    tmm.wait_log(&format!("{A} is back after its reboot"), LONG);
    tmm.wait_log(&format!("{B} is back after its reboot"), LONG);
    assert!(!tmm.log_has("did not come back"));
    assert!(!tmm.log_has("has gone missing"));
    assert_eq!(strings(&tmm.hook("/get_dimensions")["ios_devices"]), ["2"]);
}

#[test]
fn android_and_iphones_share_one_health_pass_and_the_dimensions() {
    let lab = Lab::new("both");
    lab.phones(&[A]);
    lab.phone(A, "iPhone14,2", "17.1", "87");
    let sim = Sim::start(&["modern:P"], &[]);
    let tmm = Tmm::new("android-ios")
        .phones()
        .args(["--devices", "android,ios"])
        .iphones(&lab)
        .start();
    connect_phone(tmm.adb_port(), sim.port("P"));
    let p = sim.serial("P");
    tmm.wait_sample(
        &format!("device_up{{serial=\"{p}\",kind=\"android\",device_type=\"redfin\"}}"),
        1.0,
        LONG,
    );
    tmm.wait_sample(&up(A, "iPhone14,2"), 1.0, LONG);

    let dims = tmm.hook("/get_dimensions");
    assert_eq!(strings(&dims["os"]), ["Android", "iOS", "iOS-17.1"]);
    assert_eq!(strings(&dims["device_type"]), ["iPhone14,2", "redfin"]);
    assert_eq!(strings(&dims["ios_devices"]), ["1"]);
    assert_eq!(strings(&dims["android_devices"]), ["1"]);
    let state = tmm.hook("/get_state");
    assert_eq!(device(&state, &p).unwrap()["kind"], "android");
    assert_eq!(device(&state, A).unwrap()["kind"], "ios");

    // The gone-missing rule covers the iPhone too, beside a healthy Android phone.
    lab.phones(&[]);
    let state = wait_state(&tmm, "the iPhone gone missing", |s| {
        !reasons(s, "quarantined").is_empty()
    });
    assert_eq!(
        reasons(&state, "quarantined"),
        format!("device {A} (iPhone14,2) has gone missing")
    );
    let dims = tmm.hook("/get_dimensions");
    assert_eq!(strings(&dims["os"]), ["Android"]);
    assert!(dims.get("ios_devices").is_none(), "{dims}");
}

#[test]
fn usbmuxd_is_started_its_lines_forwarded_restarted_when_it_dies_and_stopped() {
    let lab = Lab::new("usbmuxd");
    let tmm = ios_only("usbmuxd").iphones(&lab).start();
    tmm.wait_log("started usbmuxd: ", LONG);
    tmm.wait_log(
        "usbmuxd: [00:00:00.000][3] usbmuxd stand-in starting up --foreground",
        LONG,
    );
    // Its pid from our log line, not from our children: a round's tools are children too.
    let started = tmm.log_line("started usbmuxd: ").unwrap();
    let pid: i32 = started
        .rsplit_once("(pid ")
        .and_then(|(_, p)| p.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {started:?}"));
    assert!(tmm.children().contains(&pid), "usbmuxd {pid} is our child");
    send_signal(pid, libc::SIGKILL);
    tmm.wait_log("usbmuxd exited with signal 9 (SIGKILL)", LONG);
    wait_for(LONG, "usbmuxd started again", || {
        (tmm.log_count("started usbmuxd: ") == 2).then_some(())
    });
    tmm.term();
    tmm.wait_log("usbmuxd stopped", LONG);
}

/// The monitor in a mount namespace of its own with a private `/run`, so that the real
/// usbmuxd's fixed socket and lock file are the test's alone. Needs root and Debian's
/// usbmuxd (ci/deps installs it).
const PRIVATE_RUN: [&str; 5] = [
    "unshare",
    "--mount",
    "sh",
    "-c",
    "mount -t tmpfs tmpfs /run && exec \"$0\" \"$@\"",
];

#[test]
fn the_real_usbmuxd_runs_under_us_and_stops_with_us() {
    assert!(
        std::path::Path::new("/usr/sbin/usbmuxd").exists(),
        "/usr/sbin/usbmuxd is missing: run ci/deps (Debian's usbmuxd package)"
    );
    let lab = Lab::new("real-usbmuxd");
    let tmm = ios_only("real-usbmuxd")
        .args(["--idevice-dir", lab.dir.to_str().unwrap()])
        .wrapper(PRIVATE_RUN)
        .start();
    tmm.wait_log("started usbmuxd: /usr/sbin/usbmuxd --foreground", LONG);
    // Its own notice-level lines reach our log at info, prefixed.
    tmm.wait_log("usbmuxd: [", LONG);
    tmm.wait_log("] Initialization complete", LONG);
    tmm.term();
    tmm.wait_log("] Shutdown complete", LONG);
    tmm.wait_log("usbmuxd stopped (exit code 0)", LONG);
}

#[test]
fn a_usbmuxd_that_already_answers_is_used_and_none_is_started() {
    let lab = Lab::new("foreign-usbmuxd");
    // Someone else's usbmuxd (the host's, mounted into the pod): a listener on the socket.
    let script = "mount -t tmpfs tmpfs /run && \
        python3 -c 'import socket,time; s=socket.socket(socket.AF_UNIX); \
        s.bind(\"/run/usbmuxd\"); s.listen(); time.sleep(120)' & \
        while [ ! -S /run/usbmuxd ]; do sleep 0.05; done; exec \"$0\" \"$@\"";
    let tmm = ios_only("foreign-usbmuxd")
        .iphones(&lab)
        .wrapper(["unshare", "--mount", "sh", "-c", script])
        .start();
    tmm.wait_log(
        "usbmuxd already listens on /var/run/usbmuxd: using it, not starting ours",
        LONG,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!tmm.log_has("started usbmuxd"));
}
