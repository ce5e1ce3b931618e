//! Android phones end to end: the real binary, the real Debian adb server (started by
//! the binary itself on a private port, with `$HOME` in a temp dir so the key goes
//! there), and simulated phones added with `host:connect`. What the binary publishes is
//! read from `/metrics` and from its log lines.
//!
//! "no permissions" needs a real USB device node; it is covered by the devices-l parser
//! fixtures and by `devices::tests::no_permissions_is_quarantined_with_the_usb_remedy`.

mod support;

use std::time::{Duration, Instant};

use support::android::{
    adb_request, connect_phone, device_service, disconnect_phone, reasons, up, usable, wait_reason,
    wait_rounds, Sim, UsbBus, ADB,
};
use support::http::request;
use support::{send_signal, wait_for, KillOnDrop, TempDir, Tmm};

const LONG: Duration = Duration::from_secs(30);

fn state(serial: &str, state: &str) -> String {
    format!("device_state{{serial=\"{serial}\",state=\"{state}\"}}")
}

#[test]
fn health_rows_set_and_clear() {
    let tmm = Tmm::new("health")
        .plugged(&[
            "modern:M",
            "hot:H",
            "android6:A6",
            "unauthorized:U",
            "hangs:G",
        ])
        .start();
    let sim = tmm.sim();
    let (m, h, a6, u, g) = (
        sim.serial("M"),
        sim.serial("H"),
        sim.serial("A6"),
        sim.serial("U"),
        sim.serial("G"),
    );

    // The modern phone, the Android 6 phone (shell v1, CRLF, sysfs temperatures) and the
    // phone whose thermalservice hangs are all usable.
    tmm.wait_sample(&up(&m, "redfin"), 1.0, LONG);
    tmm.wait_sample(&up(&a6, "hammerhead"), 1.0, LONG);
    tmm.wait_sample(&up(&g, "redfin"), 1.0, LONG);
    let metrics = tmm.metrics();
    assert!(metrics.contains(&format!(
        "device_temperature_celsius{{serial=\"{a6}\",sensor=\"tsens_tz_sensor0\"}} 31.5"
    )));
    assert!(metrics.contains(&format!("device_battery_percent{{serial=\"{a6}\"}} 85")));
    assert!(metrics.contains(&format!("device_uptime_seconds{{serial=\"{a6}\"}}")));
    // The hung phone still reports what answered: battery and its temperature.
    assert!(metrics.contains(&format!(
        "device_temperature_celsius{{serial=\"{g}\",sensor=\"battery\"}} 31.5"
    )));

    // Hot with a low battery: maintenance.
    tmm.wait_log(
        &format!("maintenance reason set: battery low: {h} 12% (< 30%)"),
        LONG,
    );
    tmm.wait_log(
        &format!("maintenance reason set: too hot: {h} cpu0 44.5°C (> 35°C)"),
        LONG,
    );
    tmm.wait_sample("maintenance", 1.0, LONG);
    // Unauthorized: quarantined with the key remedy.
    tmm.wait_sample(&state(&u, "unauthorized"), 1.0, LONG);
    tmm.wait_log(
        &format!("quarantine reason set: device {u} is unauthorized: accept this host's adb key"),
        LONG,
    );
    tmm.wait_sample("quarantined", 1.0, LONG);

    // Booting: sys.boot_completed is not 1.
    sim.control("set M booting 1");
    tmm.wait_log(&format!("maintenance reason set: booting: {m}"), LONG);
    tmm.wait_sample(&up(&m, "redfin"), 0.0, LONG);
    sim.control("set M booting 0");
    tmm.wait_log(&format!("maintenance reason cleared: booting: {m}"), LONG);

    // Every reason clears with its condition.
    sim.control("set H battery 90");
    sim.control("set H temp 30");
    tmm.wait_log(
        &format!("maintenance reason cleared: battery low: {h} 12% (< 30%)"),
        LONG,
    );
    tmm.wait_log(
        &format!("maintenance reason cleared: too hot: {h} cpu0 44.5°C (> 35°C)"),
        LONG,
    );
    tmm.wait_sample("maintenance", 0.0, LONG);

    // Rounds keep coming while one phone hangs on every round.
    wait_rounds(&tmm, 3);
    assert!(
        tmm.sample("interrogation_errors_total{kind=\"timeout\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn offline_phone_is_reconnected_then_quarantined() {
    let sim = Sim::start(&["offline:O"], &[]);
    let tmm = Tmm::new("offline").phones().start();
    let o = sim.serial("O");
    // A TCP transport that is reset is dropped by the server; a USB phone would
    // re-enumerate. Play the USB bus: keep connecting it.
    let bus = UsbBus::start(tmm.adb_port(), sim.port("O"));
    tmm.wait_log(
        &format!("maintenance reason set: device {o} offline, reconnecting"),
        LONG,
    );
    tmm.wait_log("asking the adb server to reconnect offline phones", LONG);
    // The recovery ladder, one step per round: the phone's own reconnect, then (it is
    // the only phone, and no task runs) the adb server, then a person.
    tmm.wait_log(
        &format!("maintenance reason set: device {o} offline, recovering: step 2, reconnect {o}"),
        LONG,
    );
    tmm.wait_log(&format!("asking the adb server to reconnect {o}"), LONG);
    tmm.wait_log(
        &format!("device {o} offline, recovering: step 3, restart the adb server"),
        LONG,
    );
    tmm.wait_log(
        "every phone is stuck and no task runs: restarting the adb server",
        LONG,
    );
    tmm.wait_log(
        &format!(
            "quarantine reason set: device {o} is still offline after every recovery step: \
             tried reconnect-offline, reconnect {o}, restart the adb server (last: restart the adb server)"
        ),
        LONG,
    );
    tmm.wait_sample("quarantined", 1.0, LONG);
    assert!(
        tmm.sample(&format!("device_recovery_step{{serial=\"{o}\"}}"))
            .unwrap_or(0.0)
            >= 4.0
    );
    drop(bus);
}

#[test]
fn plug_and_unplug_show_within_a_second() {
    let tmm = Tmm::new("plug").plugged(&["modern:P"]).start();
    let sim = tmm.sim();
    let p = usable(&tmm, "P", "redfin");

    // Unplug: the server drops the transport; we show it missing and quarantine.
    let reply = disconnect_phone(tmm.adb_port(), sim.port("P"));
    assert!(reply.starts_with("OKAY"), "{reply}");
    let unplugged = Instant::now();
    tmm.wait_sample(&state(&p, "missing"), 1.0, LONG);
    let took = unplugged.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "unplug took {took:?} to show"
    );
    tmm.wait_log(
        &format!("quarantine reason set: device {p} (redfin) has gone missing"),
        LONG,
    );
    tmm.wait_sample("quarantined", 1.0, LONG);

    // Plug it back: listed again within a second, usable after its round.
    connect_phone(tmm.adb_port(), sim.port("P"));
    let plugged = Instant::now();
    tmm.wait_sample(&state(&p, "device"), 1.0, LONG);
    let took = plugged.elapsed();
    assert!(took < Duration::from_secs(1), "plug took {took:?} to show");
    tmm.wait_log(
        &format!("quarantine reason cleared: device {p} (redfin) has gone missing"),
        LONG,
    );
    tmm.wait_sample(&up(&p, "redfin"), 1.0, LONG);
    tmm.wait_sample("quarantined", 0.0, LONG);
}

#[test]
fn the_adb_server_killed_under_us_comes_back() {
    let tmm = Tmm::new("restart").plugged(&["modern:K"]).start();
    let k = usable(&tmm, "K", "redfin");
    tmm.wait_log("following the device list", LONG);

    // SIGKILL our server child: we start another and follow its list.
    let children = tmm.children();
    assert_eq!(
        children.len(),
        1,
        "expected the adb server alone: {children:?}"
    );
    send_signal(children[0], libc::SIGKILL);
    tmm.wait_sample("adb_server_restarts_total", 1.0, LONG);
    wait_for(LONG, "following the new server's list", || {
        (tmm.log_count("following the device list") >= 2).then_some(())
    });
    // A new server knows no TCP phones: the monitor connects the ones it followed.
    tmm.wait_log(&format!("connecting {k} again"), LONG);
    tmm.wait_sample(&up(&k, "redfin"), 1.0, LONG);

    // An adb client of another version does `host:kill`: same recovery.
    let reply = adb_request(tmm.adb_port(), "host:kill", Duration::from_secs(5)).unwrap();
    assert!(reply.starts_with("OKAY"), "{reply}");
    tmm.wait_sample("adb_server_restarts_total", 2.0, LONG);
    wait_for(LONG, "following the third server's list", || {
        (tmm.log_count("following the device list") >= 3).then_some(())
    });
    wait_for(LONG, "the phone connected to the third server", || {
        (tmm.log_count(&format!("connecting {k} again")) == 2).then_some(())
    });
    tmm.wait_sample(&up(&k, "redfin"), 1.0, LONG);
}

#[test]
fn sixteen_phones_at_once() {
    let names: Vec<String> = (0..16).map(|i| format!("modern:P{i}")).collect();
    let specs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tmm = Tmm::new("sixteen").plugged(&specs).start();
    let sim = tmm.sim();
    for (name, _) in &sim.phones {
        tmm.wait_sample(&up(&sim.serial(name), "redfin"), 1.0, LONG);
    }
    wait_rounds(&tmm, 2);
    let metrics = tmm.metrics();
    let usable = metrics
        .lines()
        .filter(|l| l.starts_with("test_machine_monitor_device_up{") && l.ends_with(" 1"))
        .count();
    assert_eq!(usable, 16, "{metrics}");
    assert_eq!(tmm.sample("quarantined"), Some(0.0));
    assert_eq!(tmm.sample("maintenance"), Some(0.0));
}

#[test]
fn a_server_already_listening_is_used_not_replaced() {
    // Start a server ourselves, then the binary: it must not start a second one.
    let home = TempDir::new("foreign");
    let port = support::free_port();
    let _foreign = KillOnDrop(
        std::process::Command::new(ADB)
            .args(["-P", &port.to_string(), "nodaemon", "server"])
            .env("HOME", home.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(LONG, "the foreign adb server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let sim = Sim::start(&["modern:F"], &[]);
    let tmm = Tmm::new("foreign-client").adb_port(port).start();
    connect_phone(port, sim.port("F"));
    tmm.wait_sample(&up(&sim.serial("F"), "redfin"), 1.0, LONG);
    tmm.wait_log("already listens", LONG);
    assert!(tmm.children().is_empty(), "{:?}", tmm.children());
}

#[test]
fn devices_subcommand_shows_what_the_adb_server_lists_with_verdicts() {
    let sim = Sim::start(&["modern:M", "unauthorized:U"], &[]);
    let tmm = Tmm::new("devices-cmd").phones().start();
    let (m, u) = (sim.serial("M"), sim.serial("U"));
    connect_phone(tmm.adb_port(), sim.port("M"));
    tmm.wait_sample(&state(&m, "device"), 1.0, LONG);
    // Plugged in while the monitor follows the list: the adb server never tells its
    // tracker that this phone became unauthorized, so only the list asked at a tick
    // shows it, and no reconnect may kick it meanwhile.
    connect_phone(tmm.adb_port(), sim.port("U"));
    tmm.wait_sample(&state(&u, "unauthorized"), 1.0, LONG);
    assert!(
        !tmm.log_has("reconnect"),
        "a phone waiting for its key was kicked"
    );

    let out = tmm.devices_command();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |serial: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{serial} ")))
            .unwrap_or_else(|| panic!("no line for {serial} in {text}"))
            .to_string()
    };
    let (lm, lu) = (line(&m), line(&u));
    assert!(lm.contains("  device  "), "{lm}");
    assert!(lm.contains("product:redfin"), "{lm}");
    assert!(lm.contains("transport_id:"), "{lm}");
    assert!(lm.ends_with("-> usable"), "{lm}");
    assert!(lu.contains("  unauthorized  "), "{lu}");
    assert!(
        lu.contains(&format!(
            "-> quarantined: device {u} is unauthorized: accept this host's adb key on the phone"
        )),
        "{lu}"
    );
    assert!(
        text.starts_with(&format!(
            "2 phones listed by the adb server at 127.0.0.1:{}, with the verdicts of the monitor at 127.0.0.1:{}:\n",
            tmm.adb_port(), tmm.metrics_port
        )),
        "{text}"
    );
}

#[test]
fn with_no_reboot_after_task_the_end_of_a_task_reboots_nothing() {
    let tmm = Tmm::new("no-reboot")
        .plugged(&["reboots:R"])
        .arg("--no-reboot-after-task")
        .start();
    let sim = tmm.sim();
    let r = usable(&tmm, "R", "redfin");
    let reply = request(tmm.hook_port, "GET", "/on_after_task", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Rounds go on (the phone is read again after the task); none reboots it.
    wait_rounds(&tmm, 3);
    assert_eq!(sim.control("reboots R"), "OK 0");
    assert!(!tmm.log_has("rebooting"), "a reboot was started");
    assert_eq!(tmm.sample(&up(&r, "redfin")), Some(1.0));
}

#[test]
fn a_phone_whose_adbd_wedges_is_reported_reconnected_and_quarantined() {
    let tmm = Tmm::new("wedge").plugged(&["modern:W", "modern:K"]).start();
    let sim = tmm.sim();
    let (w, k) = (sim.serial("W"), sim.serial("K"));
    tmm.wait_sample(&up(&w, "redfin"), 1.0, LONG);
    tmm.wait_sample(&up(&k, "redfin"), 1.0, LONG);
    let started = Instant::now();

    // The link stays up (adb keeps listing it as `device`); nothing answers. The first
    // failed round sets the reason and kicks the transport (the reason is short: the
    // round's script is not in it).
    assert_eq!(sim.control("wedge W"), "OK");
    let set = format!("maintenance reason set: device {w} not answering (");
    tmm.wait_log(&set, LONG);
    let line = tmm.log_line(&set).unwrap();
    assert!(line.ends_with("), reconnecting"), "{line}");
    assert!(!line.contains("@@tmm-end") && line.len() < 200, "{line}");
    tmm.wait_log(&format!("asking the adb server to reconnect {w}"), LONG);
    // A TCP transport that is kicked leaves the list (a USB one comes back and fails
    // its next round): either way the phone is quarantined with its name and remedy.
    let q = wait_reason(&tmm, "quarantined", &format!("device {w} "));
    assert!(
        q.contains(&format!(
            "device {w} still does not answer after every recovery step"
        )) || q.contains(&format!("device {w} (redfin) has gone missing")),
        "{q}"
    );
    // Long before the adb server would drop a dead USB link (about 60 s).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(!q.contains(&k), "the other phone is not quarantined: {q}");
    assert_eq!(tmm.sample("quarantined"), Some(1.0));

    // adbd answers again and the phone is plugged back: usable, no reason left.
    assert_eq!(sim.control("unwedge W"), "OK");
    connect_phone(tmm.adb_port(), sim.port("W"));
    tmm.wait_sample(&up(&w, "redfin"), 1.0, LONG);
    tmm.wait_sample("quarantined", 0.0, LONG);
}

#[test]
fn a_battery_block_at_column_0_is_read_and_a_missing_level_is_never_silent() {
    let tmm = Tmm::new("battery-layouts").plugged(&["modern:B"]).start();
    let sim = tmm.sim();
    let b = usable(&tmm, "B", "redfin");
    let battery = format!("device_battery_percent{{serial=\"{b}\"}}");

    // Flush left, at 12 %: read, and the low-battery rule applies.
    assert_eq!(sim.control("set B battery_dump flush"), "OK");
    assert_eq!(sim.control("set B battery 12"), "OK");
    tmm.wait_sample(&battery, 12.0, LONG);
    wait_reason(
        &tmm,
        "maintenance",
        &format!("battery low: {b} 12% (< 30%)"),
    );

    // No level at all: counted as a parse error, one warning, shown by `devices`.
    let parse_errors = || {
        tmm.sample("interrogation_errors_total{kind=\"parse\"}")
            .unwrap_or(0.0)
    };
    let before = parse_errors();
    assert_eq!(sim.control("set B battery_dump nolevel"), "OK");
    tmm.wait_log(&format!("{b}: cannot read its battery level"), LONG);
    wait_rounds(&tmm, 3);
    assert_eq!(
        tmm.log_count(&format!("{b}: cannot read its battery level")),
        1
    );
    assert!(
        parse_errors() >= before + 3.0,
        "{} -> {}",
        before,
        parse_errors()
    );
    assert_eq!(tmm.sample(&battery), None, "no battery figure is made up");
    let out = tmm.devices_command();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("could not read: battery level (dumpsys battery: no level line)"),
        "{text}"
    );

    // Read again: the warning may come back the next time it is lost.
    assert_eq!(sim.control("set B battery_dump indented"), "OK");
    assert_eq!(sim.control("set B battery 80"), "OK");
    tmm.wait_sample(&battery, 80.0, LONG);
}

#[test]
fn dimensions_from_the_phones_packages_and_props_and_a_trunk_build() {
    let tmm = Tmm::new("dims")
        .plugged(&["modern:P", "android6:O"])
        .start();
    let sim = tmm.sim();
    let (p, o) = (sim.serial("P"), sim.serial("O"));
    tmm.wait_sample(&up(&p, "redfin"), 1.0, LONG);
    tmm.wait_sample(&up(&o, "hammerhead"), 1.0, LONG);
    let dims = tmm.hook("/get_dimensions");
    let values = |key: &str| -> Vec<String> {
        dims[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {dims}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    // The Android 6 phone has neither package: `unknown`, as luci reports it.
    assert_eq!(values("device_gms_core_version"), ["24.08.12", "unknown"]);
    assert_eq!(
        values("device_playstore_version"),
        ["39.9.20-21", "unknown"]
    );
    assert_eq!(
        values("device_os_incremental_version"),
        ["2671473", "7641976"]
    );
    assert!(dims.get("android_hwasan_build").is_none(), "{dims}");

    // A trunk build with a hwasan product: codename and incremental, not `M`.
    for cmd in [
        "prop O ro.build.id NRD90M",
        "prop P ro.build.id MASTER",
        "prop P ro.build.version.codename VanillaIceCream",
        "prop P ro.product.name redfin_hwasan",
    ] {
        assert_eq!(sim.control(cmd), "OK", "{cmd}");
    }
    let dims = wait_for(LONG, "the trunk build's dimensions", || {
        let d = tmm.hook("/get_dimensions");
        d["android_hwasan_build"].is_array().then_some(d)
    });
    let os: Vec<&str> = dims["device_os"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        os.contains(&"VanillaIceCream") && os.contains(&"MASTER"),
        "{os:?}"
    );
    // The other phone now says N (NRD90M): an `M` could only come from MASTER.
    let dims = wait_for(LONG, "the other phone's new build", || {
        let d = tmm.hook("/get_dimensions");
        d["device_os"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == "NRD90M"))
            .then_some(d)
    });
    let os: Vec<&str> = dims["device_os"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!os.contains(&"M"), "{os:?}");
    assert!(os.contains(&"N") && os.contains(&"7641976"), "{os:?}");
}

#[test]
fn a_phone_without_ro_product_device_is_named_by_ro_build_product_when_it_goes_missing() {
    let tmm = Tmm::new("name").plugged(&["modern:N"]).start();
    let sim = tmm.sim();
    let n = usable(&tmm, "N", "redfin");
    for cmd in [
        "prop N ro.product.device",
        "prop N ro.build.product sailfish",
    ] {
        assert_eq!(sim.control(cmd), "OK", "{cmd}");
    }
    tmm.wait_sample(&up(&n, "sailfish"), 1.0, LONG);
    disconnect_phone(tmm.adb_port(), sim.port("N"));
    let q = wait_reason(&tmm, "quarantined", &format!("device {n} ("));
    assert!(
        q.contains(&format!("device {n} (sailfish) has gone missing")),
        "{q}"
    );
}

#[test]
fn metrics_agree_with_get_state_on_the_forced_quarantine_and_show_booting() {
    let home = TempDir::new("forced");
    let force = home.path().join("force");
    let tmm = Tmm::new("forced")
        .plugged(&["modern:F"])
        .args(["--force-quarantine-file", force.to_str().unwrap()])
        .start();
    let sim = tmm.sim();
    let f = usable(&tmm, "F", "redfin");

    std::fs::write(&force, "").unwrap();
    let q = reasons(&tmm, "quarantined");
    assert!(q.starts_with("forced quarantine ("), "{q}");
    // Until the bot's next get_state, the server sees it quarantined: so does /metrics.
    assert_eq!(tmm.sample("quarantined"), Some(1.0));
    assert_eq!(reasons(&tmm, "quarantined"), "");
    assert_eq!(tmm.sample("quarantined"), Some(0.0));

    assert_eq!(sim.control("set F booting 1"), "OK");
    tmm.wait_sample(&state(&f, "booting"), 1.0, LONG);
    assert_eq!(tmm.sample(&state(&f, "device")), Some(0.0));
    wait_reason(&tmm, "maintenance", &format!("booting: {f}"));
    assert_eq!(sim.control("set F booting 0"), "OK");
    tmm.wait_sample(&state(&f, "device"), 1.0, LONG);
}

#[test]
fn a_hot_phone_stays_in_maintenance_until_it_is_cooler_than_the_hysteresis() {
    let tmm = Tmm::new("hysteresis").plugged(&["modern:T"]).start();
    let sim = tmm.sim();
    let t = usable(&tmm, "T", "redfin");
    assert_eq!(sim.control("set T temp 44.5"), "OK");
    wait_reason(
        &tmm,
        "maintenance",
        &format!("too hot: {t} cpu0 44.5°C (> 35°C)"),
    );
    // Under the maximum but not 2 °C under it: still in maintenance, round after round.
    assert_eq!(sim.control("set T temp 34"), "OK");
    wait_reason(
        &tmm,
        "maintenance",
        &format!("too hot: {t} cpu0 34.0°C (cooling to below 33°C)"),
    );
    wait_rounds(&tmm, 2);
    assert!(reasons(&tmm, "maintenance").contains("cooling to below 33°C"));
    assert_eq!(tmm.sample("maintenance"), Some(1.0));
    assert_eq!(sim.control("set T temp 32"), "OK");
    tmm.wait_sample("maintenance", 0.0, LONG);
    assert_eq!(reasons(&tmm, "maintenance"), "");
}

#[test]
fn the_charge_watchdog_the_battery_health_and_the_data_check_through_the_simulator() {
    let tmm = Tmm::new("care")
        .plugged(&["modern:C"])
        .args(["--charge-stall-after", "4"])
        .start();
    let sim = tmm.sim();
    let c = usable(&tmm, "C", "redfin");
    // On USB power at 85 % and never rising: not charging once the stall time passes.
    wait_reason(
        &tmm,
        "maintenance",
        &format!("not charging: {c} (cable, port or battery)"),
    );
    assert!(tmm
        .sample(&format!("device_verdict_seconds{{serial=\"{c}\"}}"))
        .is_some());
    // Unplugged, nothing is expected of it.
    assert_eq!(sim.control("set C powered 0"), "OK");
    tmm.wait_sample("maintenance", 0.0, LONG);

    assert_eq!(sim.control("set C battery_health 4"), "OK");
    wait_reason(
        &tmm,
        "maintenance",
        &format!("battery dead: {c} (cable, port or battery)"),
    );
    assert_eq!(sim.control("set C battery_health 2"), "OK");
    tmm.wait_sample("maintenance", 0.0, LONG);

    assert_eq!(sim.control("set C data_free_mb 500"), "OK");
    wait_reason(
        &tmm,
        "maintenance",
        &format!("data partition nearly full: {c} 500 MiB free (< 1024 MiB)"),
    );
    assert_eq!(
        tmm.sample(&format!("device_data_free_bytes{{serial=\"{c}\"}}")),
        Some(500.0 * 1048576.0)
    );
    assert_eq!(sim.control("set C data_free_mb 4000"), "OK");
    tmm.wait_sample("maintenance", 0.0, LONG);
}

/// The simulator's broken phones, seen through the real adb server: a `getprop` that
/// prints exactly the bytes asked, in well-formed shell v2 packets, and the malformed
/// packets forwarded byte for byte.
#[test]
fn the_simulator_floods_getprop_and_breaks_shell_v2_through_the_real_server() {
    let tmm = Tmm::new("sim-broken").plugged(&["modern:F"]).start();
    let sim = tmm.sim();
    let f = usable(&tmm, "F", "redfin");

    assert_eq!(sim.control("flood F 3000000"), "OK");
    let raw = device_service(tmm.adb_port(), &f, "shell,v2,raw:getprop", LONG).unwrap();
    let (mut stdout, mut exit, mut rest) = (Vec::new(), None, raw.as_slice());
    while rest.len() >= 5 {
        let n = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let data = &rest[5..5 + n];
        match rest[0] {
            1 => stdout.extend_from_slice(data),
            3 => exit = data.first().copied(),
            id => panic!("unexpected packet id {id}"),
        }
        rest = &rest[5 + n..];
    }
    assert!(rest.is_empty(), "a packet cut short: {rest:?}");
    assert_eq!(stdout.len(), 3_000_000);
    assert!(
        stdout.starts_with(b"[flood.filler]: [xxx"),
        "{:?}",
        &stdout[..40]
    );
    assert_eq!(exit, Some(0));
    assert_eq!(sim.control("flood F 0"), "OK");

    for (kind, bytes) in [
        ("badid", &b"\x09\x01\x00\x00\x00x"[..]),
        ("overlong", b"\x01\xe8\x03\x00\x00short"),
        ("truncated", b"\x01\x05\x00"),
    ] {
        assert_eq!(sim.control(&format!("v2 F {kind}")), "OK");
        let raw = device_service(tmm.adb_port(), &f, "shell,v2,raw:echo hi", LONG).unwrap();
        assert_eq!(raw, bytes, "{kind}");
    }
    assert_eq!(sim.control("v2 F ok"), "OK");
    let raw = device_service(tmm.adb_port(), &f, "shell,v2,raw:echo hi", LONG).unwrap();
    assert_eq!(raw, b"\x01\x03\x00\x00\x00hi\n\x03\x01\x00\x00\x00\x00");
}

#[test]
fn a_phone_whose_shell_rejects_the_round_script_is_read_one_command_at_a_time() {
    // N's shell (mksh in the simulator, as on a phone) refuses any command with `case`,
    // which the round's package query uses: the round's script fails as a whole.
    let tmm = Tmm::new("nocase")
        .plugged(&["nocase:N", "modern:M"])
        .start();
    let sim = tmm.sim();
    let (n, m) = (sim.serial("N"), sim.serial("M"));
    // Usable from one query per command: its properties, battery and temperatures.
    tmm.wait_sample(&up(&n, "redfin"), 1.0, LONG);
    tmm.wait_sample(&up(&m, "redfin"), 1.0, LONG);
    wait_rounds(&tmm, 3);
    assert_eq!(
        tmm.sample(&format!("device_battery_percent{{serial=\"{n}\"}}")),
        Some(85.0)
    );
    assert!(tmm
        .sample(&format!(
            "device_temperature_celsius{{serial=\"{n}\",sensor=\"cpu0\"}}"
        ))
        .is_some());
    // Named once, in the shell's own words, and counted every round.
    let named =
        format!("round script failed on {n}: /system/bin/sh: syntax error: 'case' unexpected");
    assert_eq!(tmm.log_count(&named), 1, "{:?}", tmm.log_lines(&n));
    let refused = tmm
        .sample("interrogation_errors_total{kind=\"round_script\"}")
        .unwrap_or(0.0);
    assert!(refused >= 3.0, "{refused}");
    // Only the package query is lost, and only for N.
    let dims = tmm.hook("/get_dimensions");
    let gms: Vec<&str> = dims["device_gms_core_version"]
        .as_array()
        .unwrap_or_else(|| panic!("{dims}"))
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(gms, ["24.08.12", "unknown"], "{dims}");
    // A phone that answers is never "not answering": no reason, no reconnect, no
    // restart of the adb server.
    assert_eq!(
        reasons(&tmm, "maintenance"),
        "",
        "{}",
        reasons(&tmm, "quarantined")
    );
    assert_eq!(tmm.sample("quarantined"), Some(0.0));
    for never in ["not answering", "to reconnect", "restarting the adb server"] {
        assert!(!tmm.log_has(never), "{never}: {:?}", tmm.log_lines(never));
    }
}

#[test]
fn a_network_phone_the_ladder_dropped_is_usable_again_within_three_rounds_of_coming_back() {
    const ROUND: u64 = 5;
    let tmm = Tmm::new("network-back")
        .plugged(&["modern:W", "modern:K"])
        .args(["--interrogate-every", &ROUND.to_string()])
        .start();
    let sim = tmm.sim();
    let (w, k) = (sim.serial("W"), sim.serial("K"));
    tmm.wait_sample(&up(&w, "redfin"), 1.0, LONG);
    tmm.wait_sample(&up(&k, "redfin"), 1.0, LONG);

    // W goes away: offline, then the ladder's reconnect makes the adb server forget it.
    assert_eq!(sim.control("unplug W"), "OK");
    let listed =
        || adb_request(tmm.adb_port(), "host:devices", Duration::from_secs(5)).unwrap_or_default();
    wait_for(
        Duration::from_secs(90),
        "the adb server to forget W",
        || (!listed().contains(&w)).then_some(()),
    );
    assert!(tmm.log_has(&format!("asking the adb server to reconnect {w}")));
    wait_reason(&tmm, "quarantined", &format!("device {w} "));
    // While it is away, the monitor keeps asking for it, never more than every 10 s.
    tmm.wait_log(
        &format!("connecting {w} again: this network phone left"),
        LONG,
    );
    std::thread::sleep(Duration::from_secs(2 * ROUND));
    assert_eq!(
        tmm.log_count(&format!("connecting {w} again: this network phone left")),
        1,
        "the first attempt of an absence is logged, the retries are not"
    );

    // Back, and nobody types `adb connect`: usable, with no reason left, within three
    // rounds.
    assert_eq!(sim.control("replug W"), "OK");
    let back = Instant::now();
    tmm.wait_sample(&up(&w, "redfin"), 1.0, LONG);
    tmm.wait_sample("quarantined", 0.0, LONG);
    assert!(
        back.elapsed() <= Duration::from_secs(3 * ROUND + 2),
        "usable {:?} after it came back",
        back.elapsed()
    );
    assert_eq!(reasons(&tmm, "quarantined"), "");
    assert!(
        tmm.log_has(&format!("{w}: connected to")),
        "{:?}",
        tmm.log_lines(&w)
    );
}
