//! The drain at shutdown (issue 29), end to end: the real binary, real Python running the
//! stand-in bot, whose task is a subprocess in a process group of its own as the real
//! bot's is, the stand-in server, and real signals. Timings come from the log's own
//! timestamps and the server's record of when a task's result came.

mod support;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::http::{get, request};
use support::swarming::FakeSwarming;
use support::tmm::{line_time, lines_with};
use support::{alive, KillOnDrop, Monitor, TempDir, Tmm, BOT_ID};

const LONG: Duration = Duration::from_secs(30);

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The pid in the stand-in bot's `task pid N in process group G, ...` line, and G.
fn task_of(text: &str) -> (i32, i32) {
    let line = lines_with(text, "task pid ")
        .pop()
        .unwrap_or_else(|| panic!("no task line in:\n{text}"));
    let after = line.split("task pid ").nth(1).unwrap();
    let mut words = after.split([' ', ',']);
    let pid = words.next().unwrap().parse().unwrap();
    let group = after
        .split("process group ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (pid, group)
}

fn events(server: &FakeSwarming) -> Vec<Value> {
    server.state()["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn task_results(server: &FakeSwarming) -> Vec<Value> {
    server.state()["task_results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_stand_in_bot_finishes_its_task_on_sigterm_then_reports_and_shuts_down() {
    // The stand-in alone, as the monitor would run it, without the monitor: what it
    // needs from its host is what the real bot needs.
    // A hook script that gets its token from the token endpoint at each call, as ours
    // does through the monitor: the server takes the task's result only with a token
    // that is still valid.
    let dir = TempDir::new("standin-drain");
    let hooks = dir.path().join("bot_config.py");
    fs::write(
        &hooks,
        "import json, urllib.request\n\
         def get_dimensions(bot):\n    return {'id': [bot.id], 'pool': ['default']}\n\
         def get_state(bot):\n    return {}\n\
         def get_authentication_headers(bot):\n\
         \x20   req = urllib.request.Request(bot.server + '/token', headers={'Metadata-Flavor': 'Google'})\n\
         \x20   with urllib.request.urlopen(req, timeout=10) as r:\n\
         \x20       return {'Authorization': 'Bearer ' + json.load(r)['access_token']}, 0\n",
    )
    .unwrap();
    let server = FakeSwarming::start(&["--hook-script", hooks.to_str().unwrap()]);
    fs::write(dir.path().join("swarming_bot.zip"), server.zip_bytes()).unwrap();
    let out_path = dir.path().join("bot.out");
    let mut bot = KillOnDrop(
        Command::new("python3")
            .args(["swarming_bot.zip", "start_bot"])
            .current_dir(dir.path())
            .env("SWARMING_EXTERNAL_BOT_SETUP", "1")
            .env("SWARMING_BOT_ID", "standin")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(dir.path().join("bot.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Lossy: the stand-in prints invalid UTF-8 on purpose.
    let out = || String::from_utf8_lossy(&fs::read(&out_path).unwrap_or_default()).into_owned();
    let wait_out = |needle: &str| {
        let deadline = Instant::now() + LONG;
        while !out().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}\n{}",
                out(),
                fs::read_to_string(dir.path().join("bot.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_out("handshake done");
    server.control(json!({"bot_cmds": [{"cmd": "run", "duration": 4}]}));
    wait_out("task pid ");
    let (task, group) = task_of(&out());
    let bot_pid = bot.pid();
    assert_eq!(group, task, "the task leads a process group of its own");
    assert_ne!(group, bot_pid, "the task is not in the bot's group");
    wait_out("fake task");

    // SIGTERM to the bot's whole group: it does not reach the task.
    // SAFETY: kill(2) of the group the test started.
    assert_eq!(unsafe { libc::kill(-bot_pid, libc::SIGTERM) }, 0);
    let polls = server.state()["polls"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        bot.0.try_wait().unwrap().is_none(),
        "bot quit mid-task:\n{}",
        out()
    );
    assert!(alive(task), "the task was stopped:\n{}", out());
    assert!(task_results(&server).is_empty());

    let status = bot.wait_timeout(LONG).expect("the bot did not exit");
    assert_eq!(status.code(), Some(0), "{}", out());
    let results = task_results(&server);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["exit_code"], 0);
    assert_eq!(results[0]["id"], "standin");
    assert!(events(&server).contains(&json!("bot_shutdown")));
    assert_eq!(
        server.state()["polls"].as_u64().unwrap(),
        polls,
        "it polled for a new task after SIGTERM"
    );
    let text = out();
    let done = text.find("task done: exit code 0, reported").unwrap();
    let shutdown = text.find("SIGTERM: shutting down").unwrap();
    assert!(done < shutdown, "{text}");
    assert!(!alive(task));
}

/// A monitor whose bot calls the hooks, with `grace` and more flags.
fn lab(name: &str, grace: u64, args: &[&str]) -> Tmm {
    Tmm::new(name)
        .bot(FakeSwarming::with_hooks())
        .args(["--grace", &grace.to_string()])
        .args(args)
}

/// Starts the monitor, hands its bot `task` once it polls, and waits until the monitor
/// knows the task runs (its `on_before_task`); the task's pid.
fn start_with_task(lab: &Tmm, task: Value) -> (Monitor, i32) {
    let m = lab.start();
    m.wait_log("handshake done", LONG);
    lab.server().control(json!({ "bot_cmds": [task] }));
    m.wait_log("task starting: holding off device reboots", LONG);
    let log = m.wait_log("fake task ", LONG);
    let (task, group) = task_of(&log);
    assert_eq!(task, group);
    (m, task)
}

/// The log line holding `needle`, and its time.
fn at(log: &str, needle: &str) -> f64 {
    let lines = lines_with(log, needle);
    assert!(!lines.is_empty(), "no {needle:?} in:\n{log}");
    line_time(lines[0])
}

fn get_state_maintenance(m: &Monitor) -> Value {
    m.hook("/get_state")["maintenance"].clone()
}

/// Nothing the monitor started is left: it has exited, and so have the bot and `task`.
fn nothing_left(m: &Monitor, bot: i32, task: i32) {
    assert!(!alive(bot), "bot {bot} outlived the monitor:\n{}", m.log());
    assert!(
        !alive(task),
        "task {task} outlived the monitor:\n{}",
        m.log()
    );
}

fn bot_pid(log: &str) -> i32 {
    let line = lines_with(log, "started the bot (pid ")[0];
    let after = line.split("started the bot (pid ").nth(1).unwrap();
    after.split(')').next().unwrap().parse().unwrap()
}

#[test]
fn a_task_running_at_sigterm_runs_to_its_end_and_the_monitor_exits_0() {
    let lab = lab("drain-finish", 10, &[]);
    let (mut m, task) = start_with_task(&lab, json!({"cmd": "run", "duration": 60}));
    // SIGTERM 5 s into the task.
    std::thread::sleep(Duration::from_secs(5));
    let bot = bot_pid(&m.log());
    let term_at = unix_now();
    m.term();
    m.wait_log("draining for shutdown: 1 task running", LONG);
    m.wait_log(
        "it runs a task; SIGTERM, and up to 3600s (--drain-limit)",
        LONG,
    );

    // While it drains: not ready, alive, every bot in maintenance, and the bot shown
    // draining with its task's running time.
    let metrics = m.metrics_port;
    let ready = get(metrics, "/readyz");
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (503, "draining: 1 task running\n")
    );
    assert_eq!(get(metrics, "/healthz").status, 200);
    assert_eq!(get_state_maintenance(&m), "draining for shutdown");
    assert_eq!(
        m.sample(&format!("bot_draining{{bot=\"{BOT_ID}\"}}")),
        Some(1.0)
    );
    let status = get(metrics, "/status.json").json();
    let ran = status["bots"][0]["draining"]["task_for_secs"]
        .as_f64()
        .unwrap();
    assert!((5.0..30.0).contains(&ran), "{status}");
    let page = get(metrics, "/").body;
    assert!(
        page.contains("draining for shutdown: its task has run "),
        "{page}"
    );
    assert!(alive(task) && alive(bot));
    assert!(task_results(lab.server()).is_empty());

    // The task ends on its own; its result reaches the server; the bot, then we, exit.
    let status = m.wait_exit(Duration::from_secs(90));
    assert_eq!(status.code(), Some(0), "{}", m.log());
    let log = m.log();
    let results = task_results(lab.server());
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["exit_code"], 0, "{results:?}");
    let reported = results[0]["at_unix"].as_f64().unwrap();
    assert!(
        reported - term_at >= 50.0,
        "reported {:.1}s after SIGTERM",
        reported - term_at
    );
    assert!(events(lab.server()).contains(&json!("bot_shutdown")));
    let drained = lines_with(&log, "drained after ");
    assert_eq!(drained.len(), 1, "{log}");
    assert!(drained[0].ends_with(": its task finished"), "{log}");
    assert!(log.contains("stopped: exit code 0"), "{log}");
    assert!(!log.contains("SIGKILL the bot"), "{log}");
    assert!(!log.contains("killed leftover process"), "{log}");
    nothing_left(&m, bot, task);
}

#[test]
fn at_the_drain_limit_the_task_is_cut_after_the_grace_and_everything_is_gone() {
    let lab = lab("drain-limit", 2, &["--drain-limit", "10"]);
    // Tokens of 4 s: fetched again every 2 s, the drain too.
    lab.server().control(json!({"token_expires_in": 4}));
    // A task deaf to SIGTERM: only the SIGKILL at the limit plus the grace ends it.
    let (mut m, task) = start_with_task(
        &lab,
        json!({"cmd": "run", "duration": 300, "ignore_sigterm": true}),
    );
    let bot = bot_pid(&m.log());
    m.term();
    // 6 s into the drain, the token the bot would report its task with is still fresh.
    std::thread::sleep(Duration::from_secs(6));
    let auth = request(m.hook_port, "GET", "/get_authentication_headers", "");
    assert_eq!(auth.status, 200, "{}\n{}", auth.body, m.log());
    assert!(
        auth.json()["expiry"].as_f64().unwrap() > unix_now(),
        "{}",
        auth.body
    );
    let status = m.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "{}", m.log());
    let log = m.log();
    let asked = at(&log, "received SIGTERM");
    let cut = at(&log, "still running its task at the drain limit (10s)");
    let killed = at(&log, "still running 2s after SIGTERM: SIGKILL");
    let stopped = at(&log, "stopped: signal 9 (SIGKILL)");
    assert!(
        (10.0..11.0).contains(&(cut - asked)),
        "cut {:.2}s after SIGTERM\n{log}",
        cut - asked
    );
    assert!((2.0..3.0).contains(&(killed - cut)), "{log}");
    assert!(stopped - killed < 1.0, "{log}");
    assert!(lines_with(&log, "drained after ")[0].ends_with(": its task cut at the drain limit"));
    assert!(
        task_results(lab.server()).is_empty(),
        "the task cannot have finished"
    );
    nothing_left(&m, bot, task);
}

#[test]
fn a_second_signal_during_the_drain_takes_todays_path_at_once() {
    let lab = lab("drain-hurry", 10, &[]);
    let (mut m, task) = start_with_task(&lab, json!({"cmd": "run", "duration": 300}));
    let bot = bot_pid(&m.log());
    m.term();
    m.wait_log("draining for shutdown: 1 task running", LONG);
    m.wait_log("it runs a task; SIGTERM", LONG);
    let t0 = Instant::now();
    m.term();
    // SIGTERM reaches the task now: it ends, the bot reports it and exits, well within
    // the grace.
    let status = m.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "{}", m.log());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let log = m.log();
    assert!(
        log.contains("told to hurry by a second termination signal: SIGTERM to it and its task"),
        "{log}"
    );
    assert!(lines_with(&log, "drained after ")[0]
        .ends_with(": its task cut by a second termination signal"));
    let results = task_results(lab.server());
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["exit_code"], -libc::SIGTERM, "{results:?}");
    assert!(events(lab.server()).contains(&json!("bot_shutdown")));
    nothing_left(&m, bot, task);
}

#[test]
fn an_idle_bot_stops_at_once() {
    let lab = lab("drain-idle", 10, &[]);
    let mut m = lab.start();
    m.wait_log("handshake done", LONG);
    let t0 = Instant::now();
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let log = m.log();
    assert!(
        log.contains("draining for shutdown: 0 tasks running"),
        "{log}"
    );
    assert!(log.contains("stopping the bot (pid"), "{log}");
    assert!(!log.contains("drained after"), "{log}");
}
