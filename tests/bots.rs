//! `--bots per-device`, everything real but the Swarming server and the phones: the
//! binary runs one stand-in bot (real Python, our hook script) per simulated phone that
//! the real adb server lists, each with its own id, directory and phone; what is checked
//! is what reached the stand-in server from each bot, the phones' reboots, and the log.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use support::android::connect_phone;
use support::http::get;
use support::swarming::FakeSwarming;
use support::tmm::{line_time, lines_with};
use support::{descendants, dir_names, still_there, wait_for, Monitor, Tmm};

const HOST: &str = "pi-9";
const LONG: Duration = Duration::from_secs(90);

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The bot id of the simulated phone on `port`.
fn bot_of(port: u16) -> String {
    format!("{HOST}--127.0.0.1-{port}")
}

/// The monitor in `--bots per-device`, its bots calling our hooks, rounds every second,
/// with the simulated phones `specs` connected.
fn start(name: &str, specs: &[&str], extra: &[&str]) -> Monitor {
    let server = FakeSwarming::with_hooks();
    server.control(json!({"poll_sleep": 0.5}));
    Tmm::new(name)
        .plugged(specs)
        .bot(server)
        .args(["--bot-id", HOST, "--interrogate-every", "1"])
        .args(["--bots", "per-device"])
        .args(extra)
        .start()
}

/// The `devices` subcommand's line for the phone on `port`.
fn devices_line(tmm: &Monitor, port: u16) -> String {
    let out = tmm.devices_command();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with(&format!("127.0.0.1:{port} ")))
        .unwrap_or_else(|| panic!("no line for {port}: {text}"))
        .to_string()
}

#[test]
fn each_phone_has_a_bot_of_its_own() {
    let rig = start(
        "bots",
        &["reboots:A", "reboots:B", "hot:C"],
        &["--gone-bot-grace", "4"],
    );
    let sim = rig.sim();
    let (server, bot_dir) = (rig.server(), &rig.bot_dir);
    let adb_port = rig.adb_port();
    let log = || rig.log();
    let (a, b, c) = (sim.port("A"), sim.port("B"), sim.port("C"));
    let (bot_a, bot_b, bot_c) = (bot_of(a), bot_of(b), bot_of(c));

    // Three bots, each polling with its own phone's dimensions alone.
    let bots = wait_for(LONG, "three bots polling with their phones", || {
        let got = server.state();
        let bots = got["bots"].clone();
        let ready = [&bot_a, &bot_b, &bot_c].iter().all(|id| {
            bots[id.as_str()]["polls"].as_u64().unwrap_or(0) >= 1
                && strings(&bots[id.as_str()]["last_dimensions"]["android_devices"]) == ["1"]
        });
        ready.then_some(bots)
    });
    for (id, port, device_type) in [
        (&bot_a, a, "redfin"),
        (&bot_b, b, "redfin"),
        (&bot_c, c, "redfin"),
    ] {
        let dims = &bots[id.as_str()]["last_dimensions"];
        assert_eq!(strings(&dims["id"]), [id.as_str()], "{dims}");
        assert_eq!(strings(&dims["device_type"]), [device_type], "{dims}");
        let state = &bots[id.as_str()]["last_state"];
        let devices = state["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 1, "{id} sees other phones: {state}");
        assert_eq!(devices[0]["serial"], format!("127.0.0.1:{port}"), "{state}");
        let own = bot_dir.join(format!("127.0.0.1-{port}"));
        assert!(own.join("swarming_bot.zip").is_file(), "{}", own.display());
    }
    // `devices` names each phone's bot.
    for (port, id) in [(a, &bot_a), (b, &bot_b), (c, &bot_c)] {
        let line = devices_line(&rig, port);
        assert!(line.ends_with(&format!("; bot {id}")), "{line}");
    }
    // /metrics: one bot_up per bot, and each phone's series names its bot.
    let metrics = rig.metrics();
    for (port, id) in [(a, &bot_a), (b, &bot_b), (c, &bot_c)] {
        let up = format!("test_machine_monitor_bot_up{{bot=\"{id}\"}} 1\n");
        assert!(metrics.contains(&up), "{up} missing");
        let phone = format!(
            "test_machine_monitor_device_bot{{serial=\"127.0.0.1:{port}\",bot=\"{id}\"}} 1\n"
        );
        assert!(metrics.contains(&phone), "{phone} missing");
    }
    // --bot-dir holds only the bots' directories.
    let entries = dir_names(bot_dir);
    let mut want = vec![
        format!("127.0.0.1-{a}"),
        format!("127.0.0.1-{b}"),
        format!("127.0.0.1-{c}"),
    ];
    want.sort();
    assert_eq!(entries, want);

    // The hot phone puts its own bot alone into maintenance.
    wait_for(LONG, "C's bot in maintenance for heat", || {
        let got = server.state();
        let m = got["bots"][bot_c.as_str()]["last_state"]["maintenance"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        m.contains("too hot").then_some(())
    });
    let got = server.state();
    for id in [&bot_a, &bot_b] {
        let state = &got["bots"][id.as_str()]["last_state"];
        assert!(state.get("maintenance").is_none(), "{id}: {state}");
        assert!(state.get("quarantined").is_none(), "{id}: {state}");
    }

    // The forced-quarantine file quarantines every bot of the Pi, each once.
    let forced = |got: &Value| {
        got["quarantined_seen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|q| {
                q["quarantined"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("forced quarantine ("))
            })
            .count()
    };
    std::fs::write(
        bot_dir
            .parent()
            .unwrap()
            .join(format!("{HOST}.force_quarantine")),
        "",
    )
    .unwrap();
    wait_for(LONG, "the forced quarantine from every bot", || {
        (forced(&server.state()) >= 3).then_some(())
    });
    let polls = |got: &Value| -> u64 {
        [&bot_a, &bot_b, &bot_c]
            .iter()
            .map(|id| got["bots"][id.as_str()]["polls"].as_u64().unwrap_or(0))
            .min()
            .unwrap_or(0)
    };
    let then = polls(&server.state());
    wait_for(LONG, "two more polls of every bot", || {
        (polls(&server.state()) >= then + 2).then_some(())
    });
    assert_eq!(forced(&server.state()), 3);

    // A task on A's bot reboots A alone.
    server.control(json!({"bot_cmds_for": {bot_a.as_str(): [{"cmd": "run", "duration": 0.5}]}}));
    wait_for(LONG, "A rebooted after its bot's task", || {
        (sim.control("reboots A") == "OK 1").then_some(())
    });
    assert_eq!(sim.control("reboots B"), "OK 0");

    // B unplugged: only its bot is quarantined; after the grace only it is stopped.
    sim.control("unplug B");
    wait_for(LONG, "B's bot quarantined", || {
        let got = server.state();
        let q = got["bots"][bot_b.as_str()]["last_state"]["quarantined"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        q.contains(&format!("127.0.0.1:{b}")).then_some(())
    });
    let got = server.state();
    assert!(
        got["bots"][bot_a.as_str()]["last_state"]
            .get("quarantined")
            .is_none(),
        "{got}"
    );
    wait_for(LONG, "B's bot stopped after the grace", || {
        log()
            .contains(&format!(
                "stopping bot {bot_b}: its phone 127.0.0.1:{b} has been gone"
            ))
            .then_some(())
    });
    assert!(
        !log().contains(&format!("stopping bot {bot_a}")),
        "{}",
        log()
    );
    // Plugged back: a bot again, in the same directory.
    sim.control("replug B");
    connect_phone(adb_port, b);
    wait_for(LONG, "B's bot back", || {
        (log()
            .matches(&format!("phone 127.0.0.1:{b} gets bot {bot_b} in"))
            .count()
            == 2)
            .then_some(())
    });

    // SIGTERM: every bot drained, a clean exit, nothing left.
    let mut rig = rig;
    let children = descendants(rig.pid());
    rig.term();
    let status = rig.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{status}\n{}", rig.log());
    assert!(rig.log().contains("draining 3 bots"), "{}", rig.log());
    let left = still_there(&children);
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_crash_looping_bot_leaves_the_others_and_the_cap_refuses_with_a_reason() {
    let rig = start(
        "bots-cap",
        &["modern:A", "modern:B", "modern:C"],
        &["--max-bots", "2"],
    );
    let sim = rig.sim();
    let (a, b, c) = (sim.port("A"), sim.port("B"), sim.port("C"));
    // The phones come in a random order: whichever is third has no bot.
    let polling = |id: &str| rig.server().bot(id)["polls"].as_u64().unwrap_or(0) >= 1;
    let ports = wait_for(LONG, "two bots polling", || {
        let up: Vec<u16> = [a, b, c]
            .into_iter()
            .filter(|p| polling(&bot_of(*p)))
            .collect();
        (up.len() == 2).then_some(up)
    });
    let refused = [a, b, c].into_iter().find(|p| !ports.contains(p)).unwrap();
    wait_for(LONG, "the refusal in the log", || {
        rig.log()
            .contains(&format!(
                "no bot for 127.0.0.1:{refused}: --max-bots 2 bots run already"
            ))
            .then_some(())
    });
    let line = devices_line(&rig, refused);
    let why = format!("no bot for 127.0.0.1:{refused}: --max-bots 2 bots run already");
    assert!(line.ends_with(&why), "{line}");
    let metrics = rig.metrics();
    let zero =
        format!("test_machine_monitor_device_bot{{serial=\"127.0.0.1:{refused}\",bot=\"\"}} 0\n");
    assert!(metrics.contains(&zero), "{zero} missing");

    // One bot crashes on every poll: it alone crash-loops, the other keeps polling.
    let (looping, steady) = (bot_of(ports[0]), bot_of(ports[1]));
    let crashes: Vec<Value> = (0..6).map(|_| json!({"cmd": "crash", "code": 3})).collect();
    rig.server()
        .control(json!({"bot_cmds_for": {looping.as_str(): crashes}}));
    wait_for(LONG, "the crash loop", || {
        rig.log()
            .contains(&format!("bot {looping} is crash-looping"))
            .then_some(())
    });
    let before = rig.server().bot(&steady)["polls"].as_u64().unwrap();
    wait_for(LONG, "the steady bot polling on", || {
        (rig.server().bot(&steady)["polls"].as_u64().unwrap() >= before + 3).then_some(())
    });
    assert!(
        !rig.log().contains(&format!("bot {steady} exited")),
        "{}",
        rig.log()
    );
    assert!(!rig
        .log()
        .contains(&format!("bot {steady} is crash-looping")));

    // The status page and /status.json show each bot's own state, not the Pi's.
    let status = get(rig.metrics_port, "/status.json").json();
    let bots = status["bots"].as_array().expect("a bots list");
    assert_eq!(bots.len(), 2, "{status}");
    let find = |id: &str| bots.iter().find(|b| b["id"] == id).unwrap().clone();
    assert_eq!(find(&looping)["crashlooping"], true, "{status}");
    assert_eq!(find(&steady)["running"], true, "{status}");
    assert_eq!(
        find(&steady)["phone"],
        format!("127.0.0.1:{}", ports[1]).as_str()
    );
    let page = get(rig.metrics_port, "/").body;
    assert!(page.contains("<h2>Bots (2)</h2>"), "{page}");
    assert!(page.contains("crash-looping"), "{page}");
}

#[test]
fn an_unauthorized_phone_gets_a_bot_that_says_so() {
    let rig = start("bots-unauth", &["modern:M", "unauthorized:U"], &[]);
    let sim = rig.sim();
    let (m, u) = (bot_of(sim.port("M")), bot_of(sim.port("U")));
    let state = wait_for(LONG, "U's bot quarantined for its key", || {
        let state = rig.server().bot(&u)["last_state"].clone();
        state["quarantined"]
            .as_str()
            .is_some_and(|q| q.contains("is unauthorized: accept this host's adb key"))
            .then_some(state)
    });
    assert_eq!(
        state["devices"].as_array().map(Vec::len),
        Some(1),
        "{state}"
    );
    wait_for(LONG, "M's bot polling", || {
        (rig.server().bot(&m)["polls"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    let dims = rig.server().bot(&u)["last_dimensions"].clone();
    assert!(dims.get("device_type").is_none(), "{dims}");
    assert!(rig.server().bot(&m)["last_state"]
        .get("quarantined")
        .is_none());
}

/// The pid of the bot running in `dir` (a descendant of the monitor `root`).
fn bot_pid(root: i32, dir: &std::path::Path) -> Option<i32> {
    descendants(root).into_iter().find_map(|pid| {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_bot = cmdline.windows(9).any(|w| w == b"start_bot");
        (is_bot && cwd == dir).then_some(pid)
    })
}

/// The environment of the bot running in `dir` (a descendant of the monitor `root`).
fn bot_environ(root: i32, dir: &std::path::Path) -> Vec<String> {
    bot_pid(root, dir)
        .and_then(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
        .map(|env| {
            env.split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_iphone_and_an_android_phone_each_get_a_bot_with_their_own_variable() {
    const UDID: &str = "00008030-001A2D3E0E38802E";
    let ios = support::ios::Lab::new("bots-ios");
    ios.phones(&[UDID]);
    ios.phone(UDID, "iPhone14,2", "17.1", "87");
    let tools = ios.dir.to_str().unwrap().to_string();
    let usbmuxd = ios.dir.join("usbmuxd").to_str().unwrap().to_string();
    let rig = start(
        "bots-ios",
        &["modern:P"],
        &[
            "--devices",
            "android,ios",
            "--idevice-dir",
            &tools,
            "--usbmuxd",
            &usbmuxd,
        ],
    );
    let sim = rig.sim();
    let port = sim.port("P");
    let (android, iphone) = (bot_of(port), format!("{HOST}--{UDID}"));
    let dims = wait_for(LONG, "the iPhone's bot polling with its dimensions", || {
        let dims = rig.server().bot(&iphone)["last_dimensions"].clone();
        (strings(&dims["ios_devices"]) == ["1"]).then_some(dims)
    });
    assert_eq!(strings(&dims["device_type"]), ["iPhone14,2"], "{dims}");
    assert_eq!(strings(&dims["os"]), ["iOS", "iOS-17.1"], "{dims}");
    assert!(dims.get("android_devices").is_none(), "{dims}");
    wait_for(LONG, "the Android phone's bot polling alone", || {
        let dims = rig.server().bot(&android)["last_dimensions"].clone();
        (strings(&dims["android_devices"]) == ["1"] && dims.get("ios_devices").is_none())
            .then_some(())
    });
    let root = rig.pid();
    let env = bot_environ(root, &rig.bot_dir.join(UDID).canonicalize().unwrap());
    assert!(env.contains(&format!("IOS_UDID={UDID}")), "{env:?}");
    assert!(
        env.contains(&format!("SWARMING_BOT_ID={iphone}")),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|v| v.starts_with("ANDROID_SERIAL=")),
        "{env:?}"
    );
    let dir = rig.bot_dir.join(format!("127.0.0.1-{port}"));
    let env = bot_environ(root, &dir.canonicalize().unwrap());
    assert!(
        env.contains(&format!("ANDROID_SERIAL=127.0.0.1:{port}")),
        "{env:?}"
    );
    // One download served both bots; the second bot's zip is a copy.
    let downloads = rig.server().state()["bot_code_requests"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(downloads, 1, "{}", rig.log());
    assert!(
        rig.log().contains("copied the good zip of"),
        "{}",
        rig.log()
    );
}

#[test]
fn a_hung_bot_alone_is_killed_and_started_again() {
    let rig = start(
        "bots-silence",
        &["modern:A", "modern:B"],
        &["--bot-silence-limit", "6"],
    );
    let sim = rig.sim();
    let (a, b) = (bot_of(sim.port("A")), bot_of(sim.port("B")));
    let polls = |id: &str| rig.server().bot(id)["polls"].as_u64().unwrap_or(0);
    wait_for(LONG, "both bots polling", || {
        (polls(&a) >= 1 && polls(&b) >= 1).then_some(())
    });
    let root = rig.pid();
    let dir = rig
        .bot_dir
        .join(format!("127.0.0.1-{}", sim.port("A")))
        .canonicalize()
        .unwrap();
    let hung = bot_pid(root, &dir).expect("A's bot process");
    // SAFETY: kill(2) on a process of the monitor's that the test found in /proc.
    assert_eq!(unsafe { libc::kill(hung, libc::SIGSTOP) }, 0);
    let line = wait_for(LONG, "the silence to be noticed", || {
        rig.log()
            .lines()
            .find(|l| l.contains("has called no hook for"))
            .map(str::to_string)
    });
    assert!(line.contains(&format!("bot {a} (pid {hung})")), "{line}");
    assert!(line.contains("--bot-silence-limit 6s"), "{line}");
    let before = polls(&a);
    wait_for(LONG, "A's bot polling again from a new process", || {
        let pid = bot_pid(root, &dir)?;
        (pid != hung && polls(&a) > before).then_some(())
    });
    let metrics = rig.metrics();
    let kills = |id: &str| format!("test_machine_monitor_bot_silence_kills_total{{bot=\"{id}\"}}");
    assert!(metrics.contains(&format!("{} 1\n", kills(&a))), "{metrics}");
    assert!(metrics.contains(&format!("{} 0\n", kills(&b))), "{metrics}");
    let log = rig.log();
    assert!(!log.contains(&format!("bot {b} exited")), "{log}");
    assert_eq!(log.matches("has called no hook for").count(), 1, "{log}");
}

#[test]
fn a_bad_zip_of_one_bot_is_set_aside_beside_the_bot_directory_and_fetched_again() {
    let rig = start("bots-badzip", &["modern:A"], &[]);
    let sim = rig.sim();
    let a = bot_of(sim.port("A"));
    let polls = |id: &str| rig.server().bot(id)["polls"].as_u64().unwrap_or(0);
    wait_for(LONG, "A's bot polling", || (polls(&a) >= 1).then_some(()));
    let dir = rig.bot_dir.join(format!("127.0.0.1-{}", sim.port("A")));
    let zip = dir.join("swarming_bot.zip");
    std::fs::write(&zip, b"not a zip").unwrap();
    // The zip is checked before each start: a crash makes the next one.
    rig.server()
        .control(json!({"bot_cmds_for": {a.as_str(): [{"cmd": "crash", "code": 3}]}}));
    let line = wait_for(LONG, "the bad zip set aside", || {
        rig.log()
            .lines()
            .find(|l| l.contains("is unusable") && l.contains("moved aside to"))
            .map(str::to_string)
    });
    assert!(line.contains(&zip.display().to_string()), "{line}");
    let aside = line
        .split("moved aside to ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .map(std::path::PathBuf::from)
        .unwrap();
    // Beside --bot-dir, which holds nothing but the bots' directories.
    assert_eq!(aside.parent(), rig.bot_dir.parent(), "{line}");
    assert_eq!(std::fs::read(&aside).unwrap(), b"not a zip");
    let before = polls(&a);
    wait_for(LONG, "A's bot polling again on a fetched zip", || {
        (polls(&a) > before).then_some(())
    });
    let entries = dir_names(&rig.bot_dir);
    assert_eq!(entries, [format!("127.0.0.1-{}", sim.port("A"))]);
    assert_ne!(std::fs::read(&zip).unwrap(), b"not a zip");
}

#[test]
fn at_shutdown_each_bot_drains_on_its_own_the_idle_one_at_once_a_phone_gone_or_not() {
    let mut rig = start(
        "bots-drain",
        &["modern:A", "modern:B"],
        &["--no-reboot-after-task"],
    );
    let sim = rig.sim();
    let (a, b) = (bot_of(sim.port("A")), bot_of(sim.port("B")));
    let polls = |id: &str| rig.server().bot(id)["polls"].as_u64().unwrap_or(0);
    wait_for(LONG, "both bots polling", || {
        (polls(&a) >= 1 && polls(&b) >= 1).then_some(())
    });
    rig.server()
        .control(json!({"bot_cmds_for": {a.as_str(): [{"cmd": "run", "duration": 20}]}}));
    let has = |needle: &str| rig.log().contains(needle).then_some(());
    wait_for(LONG, "A's task to start", || {
        has(&format!("{a}: fake task "))
    });
    wait_for(LONG, "the monitor to know", || {
        has(&format!("task starting on {a}"))
    });
    rig.term();
    wait_for(LONG, "the drain", || {
        has("draining for shutdown: 1 task running")
    });
    // B, idle, stops at once; A drains while the phones' adb server stays up.
    let b_stopped = wait_for(LONG, "B's bot to stop", || {
        rig.log()
            .lines()
            .find(|l| l.contains(&format!("bot {b} (pid")) && l.contains("stopped: exit code 0"))
            .map(str::to_string)
    });
    let log = rig.log();
    let asked = line_time(lines_with(&log, "received SIGTERM")[0]);
    assert!(line_time(&b_stopped) - asked < 5.0, "{log}");
    assert!(!log.contains("drained after"), "A drained too soon:\n{log}");
    let ready = get(rig.metrics_port, "/readyz");
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (503, "draining: 1 task running\n")
    );
    let metrics = rig.metrics();
    let draining =
        |id: &str, v: u8| format!("test_machine_monitor_bot_draining{{bot=\"{id}\"}} {v}\n");
    assert!(metrics.contains(&draining(&a, 1)), "{metrics}");
    assert!(metrics.contains(&draining(&b, 0)), "{metrics}");
    assert!(
        TcpStream::connect(("127.0.0.1", rig.adb_port())).is_ok(),
        "the adb server went before the last bot"
    );
    // A's phone goes while its bot drains: the bot drains the same way.
    sim.control("unplug A");
    let serial_a = format!("127.0.0.1:{}", sim.port("A"));
    wait_for(LONG, "A's phone seen gone", || {
        let text = get(rig.metrics_port, "/status.json").body;
        let status: Value = serde_json::from_str(&text).ok()?;
        status["devices"]
            .as_array()?
            .iter()
            .any(|d| d["serial"] == serial_a.as_str() && d["state"] == "missing")
            .then_some(())
    });
    assert!(!rig.log().contains("drained after"), "{}", rig.log());

    let children = descendants(rig.pid());
    let status = rig.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "{}", rig.log());
    let log = rig.log();
    let drained = lines_with(&log, &format!("bot {a} (pid"))
        .into_iter()
        .find(|l| l.contains("drained after"))
        .unwrap_or_else(|| panic!("A did not drain:\n{log}"))
        .to_string();
    assert!(drained.ends_with(": its task finished"), "{drained}");
    assert!(line_time(&drained) - line_time(&b_stopped) >= 5.0, "{log}");
    let results = rig.server().state()["task_results"].clone();
    assert_eq!(results.as_array().map(Vec::len), Some(1), "{results}");
    assert_eq!(results[0]["id"], a.as_str());
    assert_eq!(results[0]["exit_code"], 0);
    let left = still_there(&children);
    assert!(left.is_empty(), "left running: {left:?}");
}
