//! The README's first command, `ci/lab`, run as a person would: `--once` sees every step
//! of the scenario and leaves nothing running; Ctrl-C in the middle of a run stops
//! everything it started. Processes are checked by pid, from /proc.
//!
//! `--once` here is `--native` (ci/build's x86_64 musl build: about a minute when the
//! sources changed), to keep `cargo test` short; ci/test runs the default, the armv7
//! binary under qemu-arm-static, after its armv7 build. The Ctrl-C test runs the debug
//! binary (`--binary`), since what it checks is the script's own clean-up.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{descendants, still_there};

/// One lab at a time: each runs ci/deps, whose apt-get and dpkg take a system-wide lock.
static ONE_LAB: Mutex<()> = Mutex::new(());

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `ci/lab` in a process group of its own (as a shell runs a job), its stdout as lines.
fn start_lab(args: &[&str]) -> (Child, Receiver<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/lab");
    let mut child = Command::new(script);
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Collects lines until one contains `needle` (or the output ends); returns them all.
fn read_until(rx: &Receiver<String>, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(_) => return lines,
        }
    }
    lines
}

fn started_pids(lines: &[String]) -> Vec<i32> {
    lines
        .iter()
        .filter(|l| l.starts_with("lab: started "))
        .filter_map(|l| {
            l.rsplit_once(": pid ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group we created for the script.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            panic!("ci/lab still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `ci/lab` with `args` to its end (`lab: stopped`): its exit status and its lines.
fn run_to_end(args: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let (mut child, rx) = start_lab(args);
    // ci/build may have the binary to rebuild first.
    let lines = read_until(&rx, "lab: stopped", Duration::from_secs(900));
    let status = wait_exit(&mut child, Duration::from_secs(60));
    (status, lines)
}

#[test]
fn lab_per_device_checks_each_bot_and_leaves_nothing_running() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("per-device");
    let (status, lines) = run_to_end(&[
        "--once",
        "--native",
        "--bots",
        "per-device",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let text = lines.join("\n");
    assert!(
        status.success(),
        "ci/lab --bots per-device: {status}\n{text}"
    );
    for step in [
        "start", "heat", "cool", "unplug", "replug", "rebooted", "drain", "drained",
    ] {
        assert!(
            text.contains(&format!("lab: step {step}: seen")),
            "{step}: {text}"
        );
    }
    assert!(text.contains("lab: only pixel was rebooted"), "{text}");
    assert!(
        text.contains("test_machine_monitor exited with 0"),
        "{text}"
    );
    assert!(text.contains("is left"), "{text}");
}

#[test]
fn lab_once_sees_every_step_and_leaves_nothing_running() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("once");
    let (status, lines) = run_to_end(&["--once", "--native", "--dir", dir.to_str().unwrap()]);
    let text = lines.join("\n");
    assert!(status.success(), "ci/lab --once: {status}\n{text}");
    assert!(
        text.contains("x86_64-unknown-linux-musl/release/test_machine_monitor;"),
        "{text}"
    );
    for step in [
        "heat", "cool", "unplug", "replug", "reboot", "rebooted", "drain", "drained",
    ] {
        assert!(
            text.contains(&format!("lab: step {step}: seen")),
            "{step}: {text}"
        );
    }
    assert!(
        text.contains("every step of the scenario was seen"),
        "{text}"
    );
    assert!(
        text.contains("test_machine_monitor exited with 0"),
        "{text}"
    );
    // The pids it says it started, and those it says it stopped (the bot among them).
    let mut pids = started_pids(&lines);
    assert_eq!(pids.len(), 4, "{text}");
    let stopped = lines
        .iter()
        .find_map(|l| {
            l.split_once("(pids ")?
                .1
                .split_once(')')
                .map(|(p, _)| p.to_string())
        })
        .unwrap();
    pids.extend(
        stopped
            .split_whitespace()
            .map(|p| p.parse::<i32>().unwrap()),
    );
    assert!(pids.len() >= 5, "{pids:?}: {text}");
    assert_eq!(still_there(&pids), Vec::<i32>::new(), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_in_the_middle_of_a_run_stops_everything_it_started() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("sigint");
    let (mut child, rx) = start_lab(&[
        "--binary",
        env!("CARGO_BIN_EXE_test_machine_monitor"),
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let lines = read_until(&rx, "lab: step heat: seen", Duration::from_secs(300));
    let text = lines.join("\n");
    assert!(
        text.contains("lab: step heat: seen"),
        "never got to the middle of the scenario:\n{text}"
    );
    let lab = child.id() as i32;
    let tree = descendants(lab);
    let started = started_pids(&lines);
    assert_eq!(started.len(), 4, "{text}");
    for p in &started {
        assert!(tree.contains(p), "{p} not under ci/lab: {tree:?}");
    }
    assert!(
        tree.len() > started.len(),
        "the bot is not running: {tree:?}"
    );
    // What a terminal's Ctrl-C does: SIGINT to the foreground process group.
    // SAFETY: kill(2) on the process group we created for the script.
    unsafe { libc::kill(-lab, libc::SIGINT) };
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let rest = read_until(&rx, "lab: stopped", Duration::from_secs(5)).join("\n");
    assert!(status.success(), "after Ctrl-C: {status}\n{rest}");
    assert!(rest.contains("SIGINT: stopping"), "{rest}");
    assert!(
        rest.contains("test_machine_monitor exited with 0"),
        "{rest}"
    );
    assert_eq!(still_there(&tree), Vec::<i32>::new(), "{rest}");
    let _ = std::fs::remove_dir_all(&dir);
}
