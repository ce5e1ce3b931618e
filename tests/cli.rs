//! The command-line interface of the real binary: flags, exit codes, the sudo shim,
//! `--check-config`, `devices` without an adb server, and serving `/healthz` right
//! after start.

mod support;

use std::process::Command;
use std::time::Duration;

use support::http::{get, wait_for_status};
use support::{free_port, OutputWithin, Tmm, BIN, EXIT_LIMIT};

#[test]
fn version_names_the_program_and_commit() {
    let out = Tmm::bare().arg("--version").run();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("test_machine_monitor 0."), "{text}");
    assert!(text.trim_end().ends_with(')'), "{text}");
}

#[test]
fn help_describes_every_flag() {
    let out = Tmm::bare().arg("--help").run();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--swarming-server",
        "--bot-id",
        "--bot-dir",
        "--python",
        "--token-config",
        "--hook-addr",
        "--metrics-addr",
        "--adb",
        "--adb-server",
        "--devices",
        "--interrogate-every",
        "--grace",
        "--no-bot",
        "--check-config",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    for (args, needle) in [
        (vec!["--bogus"], "--bogus"),
        (vec!["--no-bot", "--grace", "soon"], "--grace"),
        (vec![], "--swarming-server"),
        (vec!["--no-bot", "--hook-addr", "nowhere"], "--hook-addr"),
    ] {
        let out = Tmm::bare().args(&args).env_remove("SWARMING_SERVER").run();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn check_config_parses_the_files_and_redacts_header_values() {
    let dir = support::TempDir::new("check-config");
    let token = dir.path().join("token.json");
    std::fs::write(
        &token,
        r#"{"url": "http://169.254.169.254/token", "headers": {"Metadata-Flavor": "Google", "X-Secret": "hunter2"}}"#,
    )
    .unwrap();
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        r#"{"caches": {"isolated": {"size": 1073741824}}}"#,
    )
    .unwrap();
    let out = Tmm::bare()
        .args(["--check-config", "--bot-dir", "/srv/bot/s"])
        .args(["--token-config", &token.display().to_string()])
        .args(["--settings", &settings.display().to_string()])
        .env("SWARMING_SERVER", "https://chromium-swarm.appspot.com")
        .env("SWARMING_BOT_ID", "skia-rpi2-rack1-shelf1-001")
        .run();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("swarming_server = https://chromium-swarm.appspot.com\n"),
        "{text}"
    );
    assert!(
        text.contains("bot_id = skia-rpi2-rack1-shelf1-001\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "force_quarantine_file = /srv/bot/skia-rpi2-rack1-shelf1-001.force_quarantine\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("token_url = http://169.254.169.254/token\n"),
        "{text}"
    );
    assert!(text.contains("X-Secret: <redacted>"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("Google"),
        "{text}"
    );
    assert!(text.contains("1073741824"), "{text}");
}

#[test]
fn check_config_exits_2_with_the_first_bad_file() {
    let dir = support::TempDir::new("check-config-bad");
    let token = dir.path().join("token.json");
    std::fs::write(&token, "{\"url\": 42}").unwrap();
    let out = Tmm::bare()
        .args([
            "--check-config",
            "--swarming-server",
            "https://s.example.com",
        ])
        .args(["--token-config", &token.display().to_string()])
        .run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&token.display().to_string()), "{err}");

    let settings = dir.path().join("settings.json");
    std::fs::write(&settings, "{\"free_partition\": 3}").unwrap();
    let out = Tmm::bare()
        .args([
            "--check-config",
            "--no-bot",
            "--settings",
            &settings.display().to_string(),
        ])
        .run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--settings"));
}

#[test]
fn sudo_shim_kills_its_parent_and_reports_its_arguments() {
    let dir = support::TempDir::new("shim");
    let link = dir.path().join("sudo");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    // sh forks the shim (a command follows it), so the shim's parent is this sh.
    let script = format!(
        "'{}' -n /sbin/shutdown -r now; echo parent survived",
        link.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output_within(EXIT_LIMIT);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("sudo shim: -n /sbin/shutdown -r now"), "{err}");
}

/// The `df` applet against Debian's coreutils `df -k -P -l`, in a private mount
/// namespace that adds what a pod has: a tmpfs whose mount point has a space, and a bind
/// mount of the root file system (one device mounted twice). The rows, their order, the
/// sources, sizes and mount points must be the same; used and available may move between
/// the two calls on a busy disk, so only their form is compared.
#[test]
fn df_applet_lists_what_coreutils_df_lists() {
    let dir = support::TempDir::new("df");
    let link = dir.path().join("df");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let spaced = dir.path().join("with space");
    let bound = dir.path().join("bound");
    std::fs::create_dir_all(&spaced).unwrap();
    std::fs::create_dir_all(&bound).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o size=3m tmm-df-test '{spaced}'; mount --bind / '{bound}'; \
         /bin/df -k -P -l; echo ====; '{link}' -k -P -l",
        spaced = spaced.display(),
        bound = bound.display(),
        link = link.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("LANG", "C")
        .output_within(EXIT_LIMIT);
    assert!(out.status.success(), "unshare (needs root): {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (theirs, ours) = text.split_once("====\n").expect("both listings");
    // The mount point starts under "Mounted on" and runs to the end of the line.
    let key = |listing: &str| -> Vec<(String, String, String)> {
        let header = listing.lines().next().expect("a header");
        let at = header.find("Mounted on").expect("a Mounted on column");
        listing
            .lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                assert!(cols.len() >= 6, "short row {l:?}");
                (
                    cols[0].to_string(),
                    cols[1].to_string(),
                    l[at..].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(ours.lines().next(), theirs.lines().next(), "header");
    assert_eq!(
        key(ours),
        key(theirs),
        "ours:\n{ours}\ncoreutils:\n{theirs}"
    );
    let tmpfs = ours
        .lines()
        .find(|l| l.starts_with("tmm-df-test "))
        .unwrap_or_else(|| panic!("no row for the tmpfs:\n{ours}"));
    assert!(
        tmpfs.ends_with(&format!(" {}", spaced.display())),
        "{tmpfs}"
    );
    assert_eq!(tmpfs.split_whitespace().nth(1), Some("3072"), "{tmpfs}");
    assert!(!ours.contains(&bound.display().to_string()), "{ours}");
    for l in ours.lines().skip(1) {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert!(
            cols[2].parse::<u64>().is_ok() && cols[3].parse::<u64>().is_ok(),
            "{l}"
        );
        assert!(cols[4] == "-" || cols[4].ends_with('%'), "{l}");
    }
}

#[test]
fn serves_healthz_and_metrics_at_once_and_stops_on_sigterm() {
    let mut tmm = Tmm::new("serve").spawn();
    let port = tmm.metrics_port;
    wait_for_status(port, "/healthz", 200);
    let reply = get(port, "/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("test_machine_monitor_build_info{"),
        "{}",
        reply.body
    );
    assert_eq!(get(port, "/nope").status, 404);
    tmm.term();
    let status = tmm.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_taken_port_is_a_clear_fatal_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = Tmm::new("taken-port")
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (--metrics-addr)"
        )),
        "{err}"
    );
}

#[test]
fn devices_without_an_adb_server_exits_1_naming_the_address() {
    let port = free_port();
    let out = Tmm::bare()
        .args(["devices", "--no-bot", "--adb-server"])
        .arg(format!("127.0.0.1:{port}"))
        .run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("owns the adb server"), "{err}");
    // It never starts a server of its own.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// The harness's guard: a test that fails must not leave what it started running, even
/// what runs in a session of its own (the monitor's adb server, the simulator's shells).
#[test]
fn the_test_guard_stops_a_process_and_what_it_started_in_other_sessions() {
    // Guarded itself: if an assertion below fails, the guard's drop still stops both.
    let mut child = support::KillOnDrop(
        Command::new("sh")
            .args(["-c", "setsid sleep 300 & echo $!; trap '' TERM; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let grandchild: i32 = line.trim().parse().unwrap();
    let alive = support::alive;
    assert!(alive(grandchild));
    // The shell ignores SIGTERM: the guard must fall back to SIGKILL, for both.
    support::stop_tree(&mut child.0, std::time::Duration::from_millis(300));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(grandchild) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!alive(grandchild), "pid {grandchild} outlived the guard");
}
