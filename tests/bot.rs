//! The Swarming bot's life cycle, end to end: the real binary, real Python running the
//! stand-in bot (tests/support/fake_bot), the stand-in server (fake_swarming.py), and
//! real signals. Timings are read from the log's own timestamps.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::swarming::FakeSwarming;
use support::tmm::{line_time, lines_with};
use support::{children, descendants, dir_names, proc_state, TempDir, Tmm, BIN, BOT_ID};

const LONG: Duration = Duration::from_secs(30);
/// The monitor's `--grace` by default when it runs a bot.
const GRACE: u64 = 10;

#[test]
fn bootstrap_sends_auth_headers_never_logs_the_token_and_drains_gracefully() {
    let lab = Tmm::new("bootstrap").bot(FakeSwarming::start(&[]));
    let mut m = lab.start();
    m.wait_log("fake bot", LONG);
    m.wait_log("handshake done", LONG);

    let st = lab.server().state();
    let token = st["token"].as_str().unwrap().to_string();
    assert_eq!(st["token_rejected"], 0, "Metadata-Flavor header not sent");
    let req = &st["bot_code_requests"][0];
    assert_eq!(req["authorization_ok"], true, "{st}");
    assert_eq!(req["bot_id"], BOT_ID);
    // The redirect target needs no authorization, and the token must not travel there.
    assert_eq!(st["versioned_requests"][0]["authorization_present"], false);
    // SWARMING_BOT_ID reached the bot.
    assert_eq!(st["last_dimensions"]["id"], json!([BOT_ID]));

    // Our files stay out of the bot directory (the bot's copy, swarming_bot.1.zip, is the
    // one it re-executed itself on); the shim sits next to it.
    assert_eq!(
        dir_names(&lab.bot_dir()),
        ["swarming_bot.1.zip", "swarming_bot.zip"]
    );
    let shim = lab.dir().join("b/.test_machine_monitor/bin/sudo");
    assert_eq!(
        fs::read_link(&shim).unwrap(),
        fs::canonicalize(BIN).unwrap()
    );

    let t0 = Instant::now();
    m.term();
    let status = m.wait_exit(LONG);
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(GRACE));
    let log = m.log();
    assert!(
        log.contains("bot: fake bot bytes \u{FFFD}\u{FFFD} end"),
        "{log}"
    );
    assert!(log.contains("stopped: exit code 0"), "{log}");
    assert!(!log.contains(&token), "the token was logged:\n{log}");
    assert!(!log.contains("ya29"), "{log}");
    assert!(lab.server().state()["events"]
        .as_array()
        .unwrap()
        .contains(&json!("bot_shutdown")));
}

#[test]
fn token_and_download_faults_are_retried() {
    let lab = Tmm::new("faults").bot(FakeSwarming::start(&[]));
    lab.server().control(json!({
        "token_faults": ["500", "drop", "expired"],
        "download_faults": ["500-versioned", "drop"],
    }));
    let mut m = lab.start();
    let log = m.wait_log("handshake done", Duration::from_secs(60));
    let token_url = format!("{}/token", lab.server().url);
    assert!(
        log.contains(&format!("token fetch from {token_url}: HTTP 500")),
        "{log}"
    );
    assert!(log.contains("token already expired"), "{log}");
    assert_eq!(lines_with(&log, "token fetch from").len(), 3, "{log}");
    let digest = lab.server().state()["digest"].as_str().unwrap().to_string();
    assert!(
        log.contains(&format!(
            "bot code download from {}/swarming/api/v1/bot/bot_code/{digest}: HTTP 500",
            lab.server().url
        )),
        "{log}"
    );
    assert_eq!(lines_with(&log, "bot code download from").len(), 2, "{log}");
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
    let token = lab.server().state()["token"].as_str().unwrap().to_string();
    assert!(!m.log().contains(&token));
}

#[test]
fn forbidden_and_truncated_downloads_never_leave_a_partial_zip() {
    let lab = Tmm::new("forbidden").bot(FakeSwarming::start(&[]));
    lab.server()
        .control(json!({"download_faults": ["403", "truncated", "html"]}));
    let mut m = lab.start();
    let log = m.wait_log("handshake done", Duration::from_secs(60));
    assert!(
        log.contains("HTTP 403: the server does not allow this bot id or these credentials"),
        "{log}"
    );
    assert_eq!(
        lines_with(&log, "HTTP 200 but not a readable zip").len(),
        2,
        "{log}"
    );
    assert_eq!(
        dir_names(&lab.bot_dir()),
        ["swarming_bot.1.zip", "swarming_bot.zip"]
    );
    assert_eq!(
        fs::read(lab.bot_dir().join("swarming_bot.zip")).unwrap(),
        lab.server().zip_bytes()
    );
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
}

#[test]
fn a_corrupt_zip_is_set_aside_and_fetched_again() {
    let lab = Tmm::new("corrupt").bot(FakeSwarming::start(&[]));
    fs::create_dir_all(lab.bot_dir()).unwrap();
    let mut zip = lab.server().zip_bytes();
    let len = zip.len();
    zip.truncate(len - 30); // the end of the central directory is gone
    fs::write(lab.bot_dir().join("swarming_bot.zip"), &zip).unwrap();
    let mut m = lab.start();
    let log = m.wait_log("handshake done", LONG);
    assert!(log.contains("is unusable (not a readable zip"), "{log}");
    let bot_dir = lab.bot_dir();
    let parent = bot_dir.parent().unwrap();
    let aside: Vec<String> = dir_names(parent)
        .into_iter()
        .filter(|n| n.starts_with("swarming_bot.zip.bad."))
        .collect();
    assert_eq!(aside.len(), 1, "{:?}", dir_names(parent));
    assert_eq!(fs::read(parent.join(&aside[0])).unwrap(), zip);
    assert_eq!(
        lab.server().state()["bot_code_requests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
}

#[test]
fn a_good_zip_is_not_downloaded_again() {
    let lab = Tmm::new("goodzip").bot(FakeSwarming::start(&[]));
    fs::create_dir_all(lab.bot_dir()).unwrap();
    fs::write(
        lab.bot_dir().join("swarming_bot.zip"),
        lab.server().zip_bytes(),
    )
    .unwrap();
    let mut m = lab.start();
    let log = m.wait_log("handshake done", LONG);
    assert!(log.contains("swarming_bot.zip is usable"), "{log}");
    assert_eq!(lab.server().state()["bot_code_requests"], json!([]));
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
}

#[test]
fn a_missing_token_config_is_one_line_and_retried_until_it_appears() {
    let lab = Tmm::new("notoken").bot(FakeSwarming::start(&[]));
    let text = fs::read_to_string(lab.token_config()).unwrap();
    fs::remove_file(lab.token_config()).unwrap();
    let mut m = lab.start();
    let expected = format!(
        "token config {}: no such file",
        lab.token_config().display()
    );
    m.wait_log(&expected, LONG);
    std::thread::sleep(Duration::from_millis(500));
    assert!(m.try_wait().is_none(), "exited:\n{}", m.log());
    fs::write(lab.token_config(), text).unwrap();
    m.wait_log("handshake done", LONG);
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
}

#[test]
fn a_crash_loop_backs_off_and_is_reported_once() {
    let lab = Tmm::new("crashloop")
        .bot(FakeSwarming::start(&[]))
        .env("FAKE_BOT_CRASH", "3");
    let mut m = lab.start();
    let log = m.wait_log("bot is crash-looping", Duration::from_secs(60));
    let starts: Vec<f64> = lines_with(&log, "started the bot (pid")
        .into_iter()
        .map(line_time)
        .collect();
    assert_eq!(starts.len(), 5, "{log}");
    let exits: Vec<f64> = lines_with(&log, "bot exited with exit code 3")
        .into_iter()
        .map(line_time)
        .collect();
    // The monitor's own delay, from one exit to the next start: the bot's Python
    // start-up, slow on a loaded machine, is not in it. Nominal delays 1, 2, 4, 8 s, each
    // jittered into its upper half; the upper bound only catches a delay that is not
    // backing off (a generous second for a late timer).
    let delays: Vec<f64> = exits.iter().zip(&starts[1..]).map(|(e, s)| s - e).collect();
    assert_eq!(delays.len(), 4, "{log}");
    for (i, delay) in delays.iter().enumerate() {
        let nominal = f64::from(1u32 << i);
        assert!(
            *delay >= nominal / 2.0 - 0.01 && *delay <= nominal + 1.0,
            "delay {i} is {delay:.3}s, expected {:.1}..{:.1}s; delays {delays:?}",
            nominal / 2.0,
            nominal + 1.0
        );
    }
    assert!(log.contains("bot exited with exit code 3"), "{log}");
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
    assert_eq!(lines_with(&m.log(), "crash-looping").len(), 1);
}

#[test]
fn a_host_reboot_request_restarts_the_bot() {
    let lab = Tmm::new("reboot").bot(FakeSwarming::start(&[]));
    let mut m = lab.start();
    m.wait_log("handshake done", LONG);
    lab.server()
        .control(json!({"bot_cmds": [{"cmd": "host_reboot"}]}));
    let log = m.wait_log_n("handshake done", 2, LONG);
    assert!(
        log.contains("bot: sudo shim: -n /sbin/shutdown -r now"),
        "{log}"
    );
    assert!(
        log.contains("bot requested a host reboot (sudo -n /sbin/shutdown -r now)"),
        "{log}"
    );
    assert_eq!(lines_with(&log, "started the bot (pid").len(), 2);
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
}

#[test]
fn a_bot_ignoring_sigterm_is_killed_after_the_grace_period() {
    let lab = Tmm::new("grace")
        .bot(FakeSwarming::start(&[]))
        .env("FAKE_BOT_IGNORE_SIGTERM", "1")
        .args(["--grace", "2"]);
    let mut m = lab.start();
    m.wait_log("handshake done", LONG);
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
    let log = m.log();
    let asked = line_time(lines_with(&log, "received SIGTERM")[0]);
    let killed = line_time(lines_with(&log, "still running 2s after SIGTERM: SIGKILL")[0]);
    let stopped = line_time(lines_with(&log, "stopped: signal 9 (SIGKILL)")[0]);
    assert!((killed - asked) >= 2.0 && (killed - asked) < 3.0, "{log}");
    assert!(stopped - killed < 1.0, "{log}");
}

#[test]
fn a_second_signal_skips_the_wait() {
    let lab = Tmm::new("hurry")
        .bot(FakeSwarming::start(&[]))
        .env("FAKE_BOT_IGNORE_SIGTERM", "1")
        .args(["--grace", "120"]);
    let mut m = lab.start();
    m.wait_log("handshake done", LONG);
    let t0 = Instant::now();
    m.term();
    m.wait_log("stopping the bot", LONG);
    m.signal(libc::SIGINT);
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(m
        .log()
        .contains("second termination signal: SIGKILL the bot"));
}

/// Each of `pids` with its state letter (`S`, `Z`...), `?` once gone.
fn with_states(pids: Vec<i32>) -> Vec<(i32, char)> {
    pids.into_iter()
        .map(|p| (p, proc_state(p).unwrap_or('?')))
        .collect()
}

/// The orphan that sleeps, from the bot's output.
fn sleeping_orphan(log: &str) -> i32 {
    let line = lines_with(log, "sleeping 3600")[0];
    let after = line.split("fake bot orphan ").nth(1).unwrap();
    after.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn orphans_come_to_us_are_reaped_and_are_killed_at_shutdown() {
    let lab = Tmm::new("orphans")
        .bot(FakeSwarming::start(&[]))
        .env("FAKE_BOT_ORPHAN", "1");
    let mut m = lab.start();
    let log = m.wait_log("handshake done", LONG);
    let me = m.pid();
    let orphan = sleeping_orphan(&log);
    // The short-lived orphan has exited by now; a subreaper that did not reap would
    // show it as a zombie child.
    std::thread::sleep(Duration::from_millis(800));
    let procs = with_states(descendants(me));
    assert!(procs.contains(&(orphan, 'S')), "{procs:?}");
    assert!(!procs.iter().any(|(_, s)| *s == 'Z'), "zombies: {procs:?}");
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
    assert!(m
        .log()
        .contains(&format!("killed leftover process {orphan}")));
    // Killed by us and reaped by us, so gone rather than re-parented elsewhere.
    assert!(!std::path::Path::new(&format!("/proc/{orphan}")).exists());
}

#[test]
fn as_pid_1_orphans_are_reaped_and_the_exit_code_is_0() {
    let lab = Tmm::new("pid1")
        .bot(FakeSwarming::start(&[]))
        .env("FAKE_BOT_ORPHAN", "1");
    let lab = lab.wrapper(["unshare", "--pid", "--fork", "--mount-proc"]);
    let mut m = lab.start();
    let log = m.wait_log("handshake done", LONG);
    assert!(log.contains("running as PID 1"), "{log}");
    // Our monitor is the unshare process's only child.
    let unshare = m.pid();
    let monitor = *children(unshare).first().expect("no monitor under unshare");
    std::thread::sleep(Duration::from_millis(800));
    let procs = with_states(descendants(monitor));
    assert!(procs.len() >= 2, "bot and orphan expected: {procs:?}");
    assert!(!procs.iter().any(|(_, s)| *s == 'Z'), "zombies: {procs:?}");
    support::send_signal(monitor, libc::SIGTERM);
    assert_eq!(m.wait_exit(LONG).code(), Some(0), "{}", m.log());
    let log = m.log();
    assert!(log.contains("stopped: exit code 0"), "{log}");
    assert!(log.contains("killed leftover process"), "{log}");
}

#[test]
fn shutdown_during_a_download_leaves_no_partial_file() {
    let lab = Tmm::new("stall").bot(FakeSwarming::start(&[]));
    lab.server().control(json!({"download_faults": ["stall"]}));
    let mut m = lab.start();
    m.wait_partial_download(0, LONG);
    let t0 = Instant::now();
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(m.log().contains("interrupted by shutdown"), "{}", m.log());
    assert_eq!(dir_names(&lab.bot_dir()), Vec::<String>::new());
}

/// A CA (RSA, as most public roots are) and a P-256 server certificate for 127.0.0.1 that
/// it signed, made by the real `openssl`: `(ca.pem, chain.pem, key.pem)` in `dir`.
fn test_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let ext = p("ext.cnf");
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (ca, ca_key, key, csr, chain) = (
        p("ca.pem"),
        p("ca.key"),
        p("key.pem"),
        p("csr"),
        p("chain.pem"),
    );
    let s = |x: &PathBuf| x.to_str().unwrap().to_string();
    for args in [
        vec![
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ]
        .into_iter()
        .map(String::from)
        .chain(["-subj".into(), format!("/CN={name} test CA")])
        .chain(["-keyout".into(), s(&ca_key), "-out".into(), s(&ca)])
        .collect::<Vec<_>>(),
        [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]
        .into_iter()
        .map(String::from)
        .chain(["-subj".into(), "/CN=127.0.0.1".into()])
        .chain(["-keyout".into(), s(&key), "-out".into(), s(&csr)])
        .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial"]
            .into_iter()
            .map(String::from)
            .chain([
                "-in".into(),
                s(&csr),
                "-CA".into(),
                s(&ca),
                "-CAkey".into(),
                s(&ca_key),
            ])
            .chain(["-extfile".into(), s(&ext), "-out".into(), s(&chain)])
            .collect(),
    ] {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    (ca, chain, key)
}

#[test]
fn the_token_and_the_zip_come_over_https_trusting_the_ca_bundle_only() {
    let certs = TempDir::new("tls-certs");
    let (ca, chain, key) = test_ca(certs.path(), "good");
    let (other_ca, _, _) = test_ca(certs.path(), "other");
    let tls = ["--tls", chain.to_str().unwrap(), key.to_str().unwrap()];

    // A bundle of another CA's root: the handshake fails, named, and is retried.
    let lab = Tmm::new("tls-untrusted")
        .bot(FakeSwarming::start(&tls))
        .env("SSL_CERT_FILE", other_ca.to_str().unwrap());
    let mut m = lab.start();
    let log = m.wait_log("invalid peer certificate", LONG);
    assert!(
        log.contains(&format!("token fetch from {}/token", lab.server().served)),
        "{log}"
    );
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));

    // The right CA's root (through SSL_CERT_FILE, as in the image's default bundle).
    let lab = Tmm::new("tls")
        .bot(FakeSwarming::start(&tls))
        .env("SSL_CERT_FILE", ca.to_str().unwrap());
    let mut m = lab.start();
    m.wait_log("handshake done", LONG);
    let state = lab.server().state();
    assert!(state["token_requests"].as_u64().unwrap() >= 1, "{state}");
    assert_eq!(
        state["bot_code_requests"].as_array().map(Vec::len),
        Some(1),
        "{state}"
    );
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
}

#[test]
fn a_missing_ca_bundle_is_one_line_counted_and_retried() {
    let lab = Tmm::new("nobundle")
        .bot(FakeSwarming::start(&[]))
        .env("SSL_CERT_FILE", "/nonexistent/ca.pem");
    let mut m = lab.start();
    let log = m.wait_log("CA bundle /nonexistent/ca.pem: no such file", LONG);
    let line = lines_with(&log, "CA bundle")[0];
    assert!(
        line.contains(&format!("token fetch from {}/token", lab.server().served)),
        "{line}"
    );
    assert!(
        m.sample(r#"token_fetches_total{result="config_error"}"#) >= Some(1.0),
        "{log}"
    );
    assert!(m.try_wait().is_none(), "exited:\n{}", m.log());
    assert_eq!(lab.server().state()["token_requests"], json!(0));
    m.term();
    assert_eq!(m.wait_exit(LONG).code(), Some(0));
}
